from hypothesis import given, strategies as st

from mailguard.scan.fromline import is_from_line, quote, unquote


def test_separators_written_by_common_tools_are_recognised():
    for line in [
        b"From MAILER-DAEMON Fri Jul  8 12:08:34 2011\n",            # procmail, postfix local
        b"From a@b.example Mon Jan  1 00:00:00 2024",                 # without line end
        b"From  Tue Feb 13 12:34 +0100 2024\n",                       # empty sender, zone, no seconds
        b'From "john smith"@example.org Wed Mar  3 10:00:00 2021\n',  # quoted sender with a space
        b"From a@b Sat Dec 31 23:59:59 PST 2022\n",                   # zone before the year
        b"From uucp!user Thu Apr  1 01:02:03 1999 remote from host\n",
        b"From a@b Mon Jan  1 00:00:00 2024\r\n",                     # CRLF mbox
        b"From a@b mon jan  1 00:00:00 2024\n",                       # names compared without case
    ]:
        assert is_from_line(line), line


def test_body_lines_starting_with_from_are_not_separators():
    for line in [
        b"From the desk of the director: meeting at 10:00\n",
        b"From: someone@example.org\n",
        b"From a@b yesterday\n",
        b"From a@b Mon Jan  1 00:00:00\n",                            # no year
        b" From a@b Mon Jan  1 00:00:00 2024\n",                      # not at the start of the line
        b">From a@b Mon Jan  1 00:00:00 2024\n",                      # quoted
        b"From " + b"x" * 2000 + b" Mon Jan  1 00:00:00 2024\n",      # longer than a separator may be
    ]:
        assert not is_from_line(line), line


def test_mboxrd_quoting_adds_and_removes_one_level():
    raw = b"a\nFrom here\n>From there\n>>From afar\nFromage\n"
    quoted = quote(raw)
    assert quoted == b"a\n>From here\n>>From there\n>>>From afar\nFromage\n"
    assert unquote(quoted) == raw


def test_mboxo_quoting_is_undone():
    assert unquote(b"x\n>From y\n") == b"x\nFrom y\n"


@given(st.lists(st.sampled_from([b"From ", b">", b"\n", b"x", b"From", b"\r\n", b">>From "]), max_size=40))
def test_quote_round_trips(pieces):
    raw = b"".join(pieces)
    quoted = quote(raw)
    assert unquote(quoted) == raw
    # no line of a quoted message can be taken for a separator
    assert not any(line.startswith(b"From ") for line in quoted.split(b"\n"))
