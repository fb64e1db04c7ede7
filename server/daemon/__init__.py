"""The daemon: the socket-owner router, token gate, authentication, scheduler and workers."""
