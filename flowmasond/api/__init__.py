"""The control socket: framing, peer credentials, method dispatch, and the methods themselves."""
