"""The selected mailbox as this session's client sees it: message sequence number -> UID.

Learnt from the server's own answers, in the order it sent them: ``* n EXISTS`` sets the count
(new messages have UIDs we do not know yet), ``* n EXPUNGE`` removes number n and renumbers
the rest (RFC 9051 §7.5.1), and every FETCH response that names a UID tells us one pair. With
it a FETCH of a message we already scanned and still hold is answered without asking the
server anything (issue 7, performance), and a client reading the mailbox UID by UID can be
read ahead of. Anything we cannot follow empties the view; an unknown pair only ever means
"ask the server", never a guess.
"""

from __future__ import annotations

from array import array

#: a mailbox with more messages than this is not mapped (4 octets a message, and a dict)
MAX_MESSAGES = 1_000_000


class MailboxView:
    def __init__(self, max_messages: int = MAX_MESSAGES) -> None:
        self.max_messages = max_messages
        #: messages in the selected mailbox; None: no view (nothing selected, or lost)
        self.count: int | None = None
        #: UID of message number i+1, 0 while unknown; made at the first UID learnt, so a
        #: session that only selects and IDLEs costs nothing per message (bench/imap.py --idle)
        self.uids: array[int] | None = None
        self._index: dict[int, int] | None = None
        #: between SELECT/EXAMINE and its tagged answer: EXISTS sets the count afresh
        self.selecting = False

    def reset(self, *, selecting: bool = False) -> None:
        self.count, self.uids, self._index, self.selecting = None, None, None, selecting

    def selected(self, ok: bool) -> None:
        """The tagged answer of SELECT/EXAMINE: a refusal leaves nothing selected."""
        self.selecting = False
        if not ok:
            self.reset()

    def on_exists(self, count: int) -> None:
        if count > self.max_messages:
            self.reset(selecting=self.selecting)
        elif self.count is None or self.selecting or count < self.count:
            # EXISTS never shrinks the mailbox (only EXPUNGE does): a smaller count is a view
            # we got wrong, so it starts again from what the server just said.
            self.count, self.uids, self._index = count, None, None
        elif count > self.count:
            if self.uids is not None:
                self.uids.extend(array("I", bytes(4 * (count - self.count))))
            self.count = count

    def on_expunge(self, number: int) -> None:
        if self.count is None:
            return
        if not 1 <= number <= self.count:
            self.reset(selecting=self.selecting)
            return
        self.count -= 1
        if self.uids is not None:
            del self.uids[number - 1]
            self._index = None  # every later number moved down by one

    def learn(self, number: int, uid: int) -> None:
        """The server said message ``number`` has ``uid``."""
        if self.count is None or self.selecting or not 1 <= number <= self.count or not 0 < uid < 2**32:
            return
        if self.uids is None:
            self.uids = array("I", bytes(4 * self.count))
        old = self.uids[number - 1]
        if old == uid:
            return
        self.uids[number - 1] = uid
        if self._index is not None:
            if old:
                self._index.pop(old, None)
            self._index[uid] = number

    def number_of(self, uid: int) -> int | None:
        """The message number of ``uid``, when the server told us."""
        if self.uids is None or self.selecting:
            return None
        if self._index is None:
            self._index = {u: n for n, u in enumerate(self.uids, start=1) if u}
        number = self._index.get(uid)
        if number is None or number > len(self.uids) or self.uids[number - 1] != uid:
            return None
        return number

    def uid_of(self, number: int) -> int | None:
        if self.uids is None or self.selecting or not 1 <= number <= len(self.uids):
            return None
        return self.uids[number - 1] or None

    def __len__(self) -> int:
        return self.count or 0
