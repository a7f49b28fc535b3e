from mailguard.proxy.imap_served import SessionMemory


def test_memory_keeps_the_servers_size_once_known_and_evicts_oldest_first() -> None:
    memory = SessionMemory(max_bytes=10)
    memory.put((b"INBOX", 1, 1), b"abcd", True)
    assert memory.get((b"INBOX", 1, 1)) == (b"abcd", True, None)
    memory.put((b"INBOX", 1, 1), b"abcd", True, 4)  # the size learnt later is kept
    assert memory.get((b"INBOX", 1, 1)) == (b"abcd", True, 4)
    memory.put((b"INBOX", 1, 2), b"efgh", False)
    memory.get((b"INBOX", 1, 1))  # used last: kept
    memory.put((b"INBOX", 1, 3), b"ijkl", True)
    assert (b"INBOX", 1, 2) not in memory and (b"INBOX", 1, 1) in memory and (b"INBOX", 1, 3) in memory
    memory.put((b"INBOX", 1, 4), b"x" * 11, True)  # larger than the whole memory: not kept
    assert (b"INBOX", 1, 4) not in memory
