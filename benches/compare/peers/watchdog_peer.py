"""Python watchdog as a peer of the comparison benchmark.

Usage: watchdog_peer.py observer|polling DIR [INTERVAL_S]. Schedules a
recursive handler on DIR with watchdog's inotify Observer or its
PollingObserver (timeout = the poll interval), and prints one line per
event, flushed, so the benchmark can time it. Prints "ready" once the
observer runs. Nothing else: the benchmark measures watchdog, not this.
"""

import sys

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver


class PrintEvents(FileSystemEventHandler):
    def on_any_event(self, event):
        sys.stdout.write(f"{event.event_type} {event.src_path}\n")
        sys.stdout.flush()


def main():
    kind, directory = sys.argv[1], sys.argv[2]
    if kind == "polling":
        observer = PollingObserver(timeout=float(sys.argv[3]))
    else:
        observer = Observer()
    observer.schedule(PrintEvents(), directory, recursive=True)
    observer.start()
    print("ready", flush=True)
    observer.join()


if __name__ == "__main__":
    main()
