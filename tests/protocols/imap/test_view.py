from mailguard.protocols.imap.view import MailboxView


def selected(count: int) -> MailboxView:
    view = MailboxView()
    view.reset(selecting=True)
    view.on_exists(count)
    view.selected(True)
    return view


def test_numbers_and_uids_follow_exists_and_expunge() -> None:
    view = selected(4)
    for number, uid in ((1, 10), (2, 11), (3, 15), (4, 20)):
        view.learn(number, uid)
    assert view.number_of(15) == 3 and view.uid_of(4) == 20
    view.on_expunge(2)  # RFC 9051 §7.5.1: every later number moves down by one
    assert view.number_of(11) is None and view.number_of(15) == 2 and view.number_of(20) == 3
    view.on_exists(4)  # a new message: its UID is not known until the server says it
    assert view.uid_of(4) is None and len(view) == 4
    view.learn(4, 21)
    assert view.number_of(21) == 4


def test_nothing_is_known_while_selecting_or_after_a_failed_select() -> None:
    view = selected(2)
    view.learn(1, 5)
    view.reset(selecting=True)
    view.on_exists(3)
    view.learn(1, 99)  # a late answer about the old mailbox is not learnt
    assert view.number_of(5) is None and view.number_of(99) is None
    view.selected(False)
    assert view.uid_of(1) is None and len(view) == 0


def test_an_impossible_count_starts_the_view_again() -> None:
    view = selected(3)
    view.learn(3, 7)
    view.on_exists(2)  # EXISTS never shrinks: what we knew is dropped
    assert view.number_of(7) is None and len(view) == 2
    view.on_expunge(9)
    assert len(view) == 0
    assert MailboxView(max_messages=10).number_of(1) is None
