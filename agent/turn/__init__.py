"""One turn: its request and input (``input``), a client's options (``options``), the loop
(``loop``: ``Turn``) and the tool calls it runs (``tools``)."""
