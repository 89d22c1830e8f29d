/*
 * The floor program: the least a poller of a ConfigMap volume can do per
 * tick, `readlink(DIR/..data)` then a relative `clock_nanosleep`. The
 * comparison benchmark builds it with gcc and measures every watcher's idle
 * CPU per tick as a ratio to it, in the same run on the same machine.
 *
 * Usage: floor DIR INTERVAL_NS. Prints the target of ..data when it first
 * reads it and whenever it changes (the benchmark times those lines).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: floor DIR INTERVAL_NS\n");
    return 2;
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/..data", argv[1]);
  long long ns = atoll(argv[2]);
  struct timespec every = {ns / 1000000000LL, ns % 1000000000LL};
  char last[4096] = "", now[4096];
  for (;;) {
    ssize_t n = readlink(path, now, sizeof now - 1);
    if (n >= 0) {
      now[n] = '\0';
      if (strcmp(now, last) != 0) {
        memcpy(last, now, (size_t)n + 1);
        printf("%s\n", now);
        fflush(stdout);
      }
    }
    /* A signal would only end the process: no EINTR restart bookkeeping. */
    clock_nanosleep(CLOCK_MONOTONIC, 0, &every, NULL);
  }
}
