"""The OSIS JSON-RPC engine: the protocol, the client engine and the server app that serves any engine."""
