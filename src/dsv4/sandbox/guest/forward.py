"""Port forwarding: a listener on the sandbox's loopback relayed to the host's allow-list relay over a unix socket.

`splice` is also the host relay's copy loop (`dsv4.sandbox.network`): stdlib only, so both sides share it.
"""

import socket
import threading


def splice(a, b):
    """Copy both ways between two connected sockets; a half-close is passed on, both close at the end."""
    left = [2]
    lock = threading.Lock()

    def pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        with lock:
            left[0] -= 1
            if left[0] == 0:
                a.close()
                b.close()

    for src, dst in ((a, b), (b, a)):
        threading.Thread(target=pump, args=(src, dst), daemon=True).start()


def forward(listener, unix_path):
    """Accept on the sandbox's loopback and relay each connection to the host through a unix socket."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:  # closed by op_unforward
            return
        up = socket.socket(socket.AF_UNIX)
        try:
            up.connect(unix_path)
        except OSError:
            conn.close()
            continue
        splice(conn, up)


def op_forward(session, req):
    family = socket.AF_INET6 if ":" in req["host"] else socket.AF_INET
    listener = socket.socket(family)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((req["host"], req["port"]))
    listener.listen(64)
    session.forwards[(req["host"], req["port"])] = listener
    threading.Thread(target=forward, args=(listener, req["unix_path"]), daemon=True).start()
    return {}


def op_unforward(session, req):
    listener = session.forwards.pop((req["host"], req["port"]), None)
    if listener is not None:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
    return {}
