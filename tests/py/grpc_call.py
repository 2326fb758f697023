"""A generic grpc Python client for wharf's tests: no stubs, raw protobuf bytes in hex.

    grpc_call.py SOCKET AUTHORITY unary METHOD REQUEST_HEX
        prints the response as hex
    grpc_call.py SOCKET AUTHORITY events CREATE_REQUEST_HEX COUNT
        opens /types.API/Events, then calls /types.API/CreateContainer with the request
        on the same channel, prints the create response, then COUNT events, as hex lines

AUTHORITY picks the HTTP/2 :authority grpcio sends over the unix socket:
    default    grpcio's own choice (since 1.57: the percent-encoded socket path)
    raw        the socket path as it is (what the 2015 grpc-go of ctr sends)
    localhost  localhost
"""

import sys
import threading

import grpc


def channel(socket, authority):
    options = []
    if authority == "raw":
        options.append(("grpc.default_authority", socket))
    elif authority == "localhost":
        options.append(("grpc.default_authority", "localhost"))
    elif authority != "default":
        raise SystemExit(f"unknown authority mode {authority}")
    return grpc.insecure_channel("unix:" + socket, options=options)


def main():
    socket, authority, kind = sys.argv[1:4]
    chan = channel(socket, authority)
    if kind == "unary":
        method, request = sys.argv[4], bytes.fromhex(sys.argv[5])
        response = chan.unary_unary(method)(request, timeout=30)
        print(response.hex())
    elif kind == "events":
        request, count = bytes.fromhex(sys.argv[4]), int(sys.argv[5])
        events = chan.unary_stream("/types.API/Events")(b"", timeout=60)
        received = []
        # The stream is open once the server sent its headers; read in the background.
        def read():
            for message in events:
                received.append(message)
                if len(received) == count:
                    return
        reader = threading.Thread(target=read)
        reader.start()
        events.initial_metadata()  # waits for the server to accept the stream
        response = chan.unary_unary("/types.API/CreateContainer")(request, timeout=60)
        print(response.hex())
        reader.join(timeout=60)
        for message in received:
            print(message.hex())
        events.cancel()
    else:
        raise SystemExit(f"unknown call kind {kind}")


if __name__ == "__main__":
    main()
