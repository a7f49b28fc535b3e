"""The generated corpus through the whole engine: every infected case caught, no false positive,
and the rewrite removes exactly the infected part (everything else hashes identical)."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from mailguard.scan.engine import Engine
from mailguard.scan.mime import Part, parse_message
from mailguard.scan.policy import Policy
from mailguard.scan.verdict import Status
from tests.scan.corpus import CASES, CLAM_NAME, TESTFILES, Case, clam_md5
from tests.peers import require_clamav_testfiles
from tests.scan.reference_detector import ReferenceDetector


def _available(c: Case) -> Case:
    if "clamav-testfiles" in c.needs:
        require_clamav_testfiles()
    return c


def _engine(c: Case, **overrides: object) -> Engine:
    md5s = {clam_md5(): CLAM_NAME} if TESTFILES.is_dir() else {}
    policy = dataclasses.replace(Policy(), **{**c.policy, **overrides})
    return Engine(policy, [ReferenceDetector(md5s)])


def _names(status: Status | None = None) -> list[str]:
    return sorted(n for n, c in CASES.items() if status is None or c.status is status)


def _params(status: Status | None = None) -> list[object]:
    """Case names; those built from Debian's clamav-testfiles are peer tests (CI runs them)."""
    return [pytest.param(n, marks=pytest.mark.peer, id=n) if "clamav-testfiles" in CASES[n].needs else n
            for n in _names(status)]


@pytest.fixture(params=_params(), ids=str)
def corpus_case(request: pytest.FixtureRequest) -> Case:
    return _available(CASES[request.param])


@pytest.fixture(params=_params(Status.INFECTED), ids=str)
def infected_case(request: pytest.FixtureRequest) -> Case:
    return _available(CASES[request.param])


@pytest.fixture(params=_params(Status.CLEAN), ids=str)
def clean_case(request: pytest.FixtureRequest) -> Case:
    return _available(CASES[request.param])


def test_corpus_has_every_kind_of_case() -> None:
    assert len(_names(Status.INFECTED)) >= 30 and len(_names(Status.CLEAN)) >= 8
    assert _names(Status.UNSCANNED)


def test_verdict_matches_expectation(corpus_case: Case) -> None:
    raw = corpus_case.build()
    verdict = _engine(corpus_case).scan(raw)
    assert verdict.status is corpus_case.status, (verdict.findings, verdict.incomplete)
    assert corpus_case.detections <= set(verdict.detection_names)
    assert corpus_case.parts <= {f.part for f in verdict.findings}
    assert corpus_case.reasons <= {i.reason for i in verdict.incomplete}


def test_scan_is_deterministic(corpus_case: Case) -> None:
    raw = corpus_case.build()
    engine = _engine(corpus_case)
    assert engine.scan(raw) == engine.scan(raw)


def test_clean_messages_pass_byte_identical(clean_case: Case) -> None:
    raw = clean_case.build()
    engine = _engine(clean_case)
    assert engine.apply(raw, engine.scan(raw)) == raw


@pytest.mark.parametrize("action", ["clean", "replace"])
def test_infected_bytes_never_reach_the_client(infected_case: Case, action: str) -> None:
    raw = infected_case.build()
    engine = _engine(infected_case, action=action)
    out = engine.apply(raw, engine.scan(raw))
    assert out != raw
    again = engine.scan(out)
    assert again.status is Status.CLEAN, again.findings
    assert b"X-MailGuard-Result: infected" in out


def _holder(index: dict[str, Part], section: str) -> Part | None:
    """The part of the raw message that holds ``section`` (decoded subtrees belong to their wrapper)."""
    node = index.get(section)
    while node is not None and node.detached:
        node = node.parent
    return node


def test_clean_action_touches_only_the_infected_part(infected_case: Case) -> None:
    """Outside the one replaced part (and the added tag), every byte is unchanged."""
    raw = infected_case.build()
    engine = _engine(infected_case, tag_received="never", subject_received=False)
    verdict = engine.scan(raw)
    out = engine.apply(raw, verdict)
    tops = {f.part.split("/", 1)[0] for f in verdict.findings}
    tree = parse_message(raw)
    index = {p.section: p for p in reversed(list(tree.walk()))}
    targets = list({_holder(index, t) for t in tops} - {None})
    if len(tops) != 1 or len(targets) != 1 or any(a.ambiguous for a in targets[0].ancestors()):
        assert b"This message was replaced by mailguard." in out
        return
    target = targets[0]
    if b"This message was replaced by mailguard." in out:
        pytest.fail("a single unambiguous infected part should be cleaned, not the message replaced")
    before, after = raw[:target.header_start], raw[target.body_end:]
    assert out.startswith(before) and out.endswith(after)
    assert hashlib.sha256(out[:len(before)]).digest() == hashlib.sha256(before).digest()
    middle = out[len(before):len(out) - len(after)]
    assert b"Content-Type: text/plain; charset=us-ascii" in middle
    assert b"This part was removed by mailguard." in middle


@pytest.fixture(scope="module")
def builtin_policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    """The real detectors (mailguard.scan.detectors) with a ClamAV hash database for clam.exe."""
    paths: tuple[str, ...] = ()
    if TESTFILES.is_dir():
        from tests.scan.corpus import clam_exe

        hdb = tmp_path_factory.mktemp("sigs") / "corpus.hdb"
        hdb.write_text(f"{clam_md5()}:{len(clam_exe())}:{CLAM_NAME}\n")
        paths = (str(hdb),)
    return dataclasses.replace(Policy(), signature_paths=paths)


def test_verdict_with_the_built_in_detectors(corpus_case: Case, builtin_policy: Policy) -> None:
    """The same corpus through ``Engine(policy)`` and the detectors it builds by itself."""
    engine = Engine(dataclasses.replace(builtin_policy, **corpus_case.policy))
    try:
        verdict = engine.scan(corpus_case.build())
    finally:
        engine.close()
    assert verdict.status is corpus_case.status, (verdict.findings, verdict.incomplete)
    assert corpus_case.detections <= set(verdict.detection_names)
