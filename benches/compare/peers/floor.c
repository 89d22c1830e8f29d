/*
 * The floor program: the least a poller of a ConfigMap volume can do per
 * tick, `readlink(DIR/..data)` for each directory, then a relative
 * `clock_nanosleep`. The comparison benchmark builds it with gcc and
 * measures every watcher's idle CPU per tick as a ratio to it, in the same
 * run on the same machine; given several directories, it is the floor of
 * one process watching them all.
 *
 * Usage: floor DIR [DIR...] INTERVAL_NS. Prints the target of a ..data
 * when it first reads it and whenever it changes (the benchmark times
 * those lines).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TARGET_MAX 256

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: floor DIR [DIR...] INTERVAL_NS\n");
    return 2;
  }
  int n = argc - 2;
  char **paths = calloc((size_t)n, sizeof *paths);
  char(*last)[TARGET_MAX] = calloc((size_t)n, sizeof *last);
  if (!paths || !last)
    return 1;
  for (int i = 0; i < n; i++) {
    size_t len = strlen(argv[i + 1]) + sizeof "/..data";
    paths[i] = malloc(len);
    if (!paths[i])
      return 1;
    snprintf(paths[i], len, "%s/..data", argv[i + 1]);
  }
  long long ns = atoll(argv[argc - 1]);
  struct timespec every = {ns / 1000000000LL, ns % 1000000000LL};
  char now[TARGET_MAX];
  for (;;) {
    for (int i = 0; i < n; i++) {
      ssize_t got = readlink(paths[i], now, sizeof now - 1);
      if (got >= 0) {
        now[got] = '\0';
        if (strcmp(now, last[i]) != 0) {
          memcpy(last[i], now, (size_t)got + 1);
          printf("%s\n", now);
          fflush(stdout);
        }
      }
    }
    /* A signal would only end the process: no EINTR restart bookkeeping. */
    clock_nanosleep(CLOCK_MONOTONIC, 0, &every, NULL);
  }
}
