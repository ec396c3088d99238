"""The process's one publisher, shared by its threads, made again after fork.

It is connected on first use, under a lock, to PUSHNOTE_BROKER (a Redis) if set, else to
PUSHNOTE_MQ_SOCKET. Threads share it: the native publisher sends each message atomically and
releases the GIL while it sends.

Pre-forking servers (gunicorn, uWSGI, Celery's prefork pool) fork workers from a process that
may already have published. A ZeroMQ context does not survive fork (its I/O thread stays in
the parent), so a child must neither use nor close the one it inherited: after fork the child
drops its reference into `_inherited`, where it is never closed, and connects its own publisher
on first use. The process id is checked as well, for forks made without os.fork.

At exit the publisher is closed, which waits up to 2 s for unsent messages: a script or
management command that notifies and exits delivers.
"""

import atexit
import os
import threading

from . import _native, conf

_lock = threading.Lock()
_publisher = None
_pid = None
# Publishers inherited through fork: kept (never used, never closed) for the child's life.
_inherited = []


def _settings():
    """Where to publish as the settings say: (endpoint, confirm endpoint, broker prefix,
    broker replicas)."""
    broker = conf.broker()
    if broker is not None:
        return broker, None, conf.broker_prefix(), conf.broker_replicas()
    return conf.mq_socket(), conf.mq_confirm_socket(), None, 0


def _matches(current, wanted):
    return (current.endpoint, current.confirm, current.broker_prefix,
            current.broker_replicas) == wanted


def publisher():
    """The publisher of this process, connected to PUSHNOTE_BROKER or PUSHNOTE_MQ_SOCKET."""
    global _publisher, _pid
    wanted = _settings()
    current = _publisher
    if current is not None and _pid == os.getpid() and _matches(current, wanted):
        return current
    with _lock:
        if _pid != os.getpid():
            _forget_inherited()
        if _publisher is not None and not _matches(_publisher, wanted):
            _publisher.close()  # the setting changed: publish where it says now
            _publisher = None
        if _publisher is None:
            endpoint, confirm, prefix, replicas = wanted
            _publisher = _native.Publisher(endpoint, confirm=confirm, broker_prefix=prefix,
                                           broker_replicas=replicas)
            _pid = os.getpid()
        return _publisher


def close():
    """Closes this process's publisher, waiting up to 2 s for unsent messages; the next
    notification connects again."""
    global _publisher
    with _lock:
        if _pid != os.getpid():
            _forget_inherited()
        current, _publisher = _publisher, None
    if current is not None:
        current.close()


def _forget_inherited():
    global _publisher, _pid
    if _publisher is not None:
        _inherited.append(_publisher)
    _publisher = None
    _pid = os.getpid()


def _after_fork_in_child():
    global _lock
    # Another thread of the parent may have held the lock at fork: it is never released here.
    _lock = threading.Lock()
    _forget_inherited()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(close)
