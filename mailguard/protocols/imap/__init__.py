"""Sans-I/O IMAP for the filtering proxy: bytes in, events out; no sockets, no asyncio.

- ``commands``: client -> server framing (literals, IDLE/AUTHENTICATE continuation, STARTTLS pause)
- ``responses``: server -> client framing (tagged, untagged, continuation, literals)
- ``capabilities``: the allow-list
- ``fetch`` / ``fetch_response``: FETCH requests and responses, item by item
- ``structure`` / ``sections`` / ``bodystructure``: cutting and describing message bytes as IMAP does
"""
