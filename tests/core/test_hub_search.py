"""Hub search and file listing against the local fake Hub; quant names parsed from real-world file names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import HearthError, NotFoundError, OfflineError
from core.hub import repo_quants, search_models
from core.hub.client import safe_relative_path
from core.hub.quants import RemoteFile, fallback_choice, find_group, group_gguf_files, parse_quant
from core.library import Library
from tests.fixtures.fakehub import FakeHub, make_gguf_repo, write_quant_file

REPO = "acme/Tiny-Llama-GGUF"


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hubfiles")


@pytest.fixture
def hub(repo_files: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        make_gguf_repo(
            server, repo_files, REPO, downloads=500, likes=2, last_modified="2024-03-01T00:00:00.000Z"
        )
        other = write_quant_file(repo_files / "other" / "Mini-Q4_0.gguf", seed=7)
        server.add_repo(
            "zeta/Mini-Llama-GGUF",
            {"Mini-Q4_0.gguf": other},
            downloads=50,
            likes=90,
            last_modified="2025-06-01T00:00:00.000Z",
            gguf={"total": 7_000_000_000, "architecture": "qwen2"},
        )
        server.add_repo(
            "beta/Llama-Safetensors",
            {},
            downloads=10_000,
            likes=5000,
            tags=["transformers", "safetensors"],
        )
        yield server


# -- quant names ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("filename", "quant"),
    [
        ("Llama-3.2-3B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("mistral-7b-instruct-v0.2.Q5_K_S.gguf", "Q5_K_S"),
        ("llama-2-7b-chat.Q4_0.gguf", "Q4_0"),
        ("llama-2-7b-chat.Q4_1.gguf", "Q4_1"),
        ("llama-2-7b-chat.Q5_0.gguf", "Q5_0"),
        ("llama-2-7b-chat.Q5_1.gguf", "Q5_1"),
        ("gemma-2-9b-it-IQ4_XS.gguf", "IQ4_XS"),
        ("gemma-2-9b-it-IQ4_NL.gguf", "IQ4_NL"),
        ("Meta-Llama-3.1-70B-Instruct-IQ2_XXS.gguf", "IQ2_XXS"),
        ("Meta-Llama-3.1-70B-Instruct-IQ1_S.gguf", "IQ1_S"),
        ("Meta-Llama-3.1-70B-Instruct-IQ1_M.gguf", "IQ1_M"),
        ("Meta-Llama-3.1-70B-Instruct-IQ3_M.gguf", "IQ3_M"),
        ("phi-4-Q8_0.gguf", "Q8_0"),
        ("phi-4-Q6_K.gguf", "Q6_K"),
        ("phi-4-Q6_K_L.gguf", "Q6_K_L"),
        ("phi-4-Q3_K_L.gguf", "Q3_K_L"),
        ("phi-4-Q2_K.gguf", "Q2_K"),
        ("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf", "Q4_K_M"),
        ("Qwen3-235B-A22B-UD-Q4_K_XL-00001-of-00003.gguf", "UD-Q4_K_XL"),
        ("DeepSeek-R1-UD-IQ1_S-00002-of-00003.gguf", "UD-IQ1_S"),
        ("ggml-model-f16.gguf", "F16"),
        ("model-bf16.gguf", "BF16"),
        ("tinyllama-1.1b-chat-v1.0.fp32.gguf", "F32"),
        ("ggml-model-f32.gguf", "F32"),
        ("bitnet_b1_58-large-TQ1_0.gguf", "TQ1_0"),
        ("bitnet_b1_58-large-TQ2_0.gguf", "TQ2_0"),
        ("gpt-oss-20b-mxfp4.gguf", "MXFP4"),
        ("Q4_K_M/Llama-3.3-70B-Q4_K_M-00001-of-00002.gguf", "Q4_K_M"),
        ("Llama-3.2-1B-Instruct-Q4_0_4_4.gguf", "Q4_0_4_4"),
        ("Q2-model-Q8_0.gguf", "Q8_0"),
        ("model.gguf", None),
        ("Llama-3-8B-Instruct.gguf", None),
    ],
)
def test_parse_quant_reads_real_world_names(filename: str, quant: str | None) -> None:
    assert parse_quant(filename) == quant


def test_split_files_are_grouped_and_projectors_left_out() -> None:
    files = [
        RemoteFile("Q4_K_M/Big-Q4_K_M-00002-of-00002.gguf", 200, "b"),
        RemoteFile("Q4_K_M/Big-Q4_K_M-00001-of-00002.gguf", 300, "a"),
        RemoteFile("Big-Q8_0-00001-of-00003.gguf", 900, "c"),
        RemoteFile("Big-Q2_K.gguf", 100, "d"),
        RemoteFile("mmproj-Big-f16.gguf", 50, "e"),
        RemoteFile("Big.imatrix.gguf", 5, "f"),
        RemoteFile("README.md", 10, None),
    ]
    groups = group_gguf_files(files)
    assert [g.name for g in groups] == ["Q2_K", "Q4_K_M", "Q8_0"]
    q4 = groups[1]
    assert q4.size == 500 and q4.complete
    assert [f.path for f in q4.files] == [
        "Q4_K_M/Big-Q4_K_M-00001-of-00002.gguf",
        "Q4_K_M/Big-Q4_K_M-00002-of-00002.gguf",
    ]
    assert not groups[2].complete and groups[2].parts_expected == 3


def test_same_quant_twice_gets_distinct_names_and_asks_which() -> None:
    files = [
        RemoteFile("A-Q4_K_M.gguf", 1),
        RemoteFile("A-abliterated-Q4_K_M.gguf", 2),
        RemoteFile("A-Q8_0.gguf", 3),
    ]
    groups = group_gguf_files(files)
    assert sorted(g.name for g in groups) == ["A-Q4_K_M", "A-abliterated-Q4_K_M", "Q8_0"]
    assert find_group(groups, "q8_0") is not None
    with pytest.raises(HearthError, match="Several files are Q4_K_M"):
        find_group(groups, "Q4_K_M")


def test_fallback_prefers_q4_k_m_then_the_nearest() -> None:
    with_q4 = group_gguf_files(
        [RemoteFile(f"m-{q}.gguf", i) for i, q in enumerate(["Q2_K", "Q4_K_M", "Q8_0"])]
    )
    assert (choice := fallback_choice(with_q4)) is not None and choice.name == "Q4_K_M"
    without = group_gguf_files(
        [RemoteFile(f"m-{q}.gguf", i) for i, q in enumerate(["Q2_K", "Q5_K_M", "Q8_0"])]
    )
    assert (choice := fallback_choice(without)) is not None and choice.name == "Q5_K_M"
    ud = group_gguf_files([RemoteFile("m-UD-Q4_K_M.gguf", 1), RemoteFile("m-Q6_K.gguf", 2)])
    assert (choice := fallback_choice(ud)) is not None and choice.name == "UD-Q4_K_M"


@pytest.mark.parametrize(
    "bad",
    [
        "../evil.gguf",
        "a/../../evil.gguf",
        "/etc/passwd",
        "C:evil.gguf",
        "a\\..\\b.gguf",
        "",
        "a//b.gguf",
        "./x.gguf",
        "x\x00.gguf",
        "~/x.gguf",
    ],
)
def test_unsafe_names_from_the_network_are_refused(bad: str) -> None:
    with pytest.raises(HearthError, match="unsafe file name"):
        safe_relative_path(bad)


def test_safe_names_keep_their_subfolder() -> None:
    assert str(safe_relative_path("Q4_K_M/model-00001-of-00002.gguf")) == "Q4_K_M/model-00001-of-00002.gguf"


# -- search -----------------------------------------------------------------------------------------
def test_search_lists_gguf_repos_with_their_details(hub: FakeHub) -> None:
    models = search_models("llama")
    assert [m.id for m in models] == [
        REPO,
        "zeta/Mini-Llama-GGUF",
    ]  # most downloaded first; no safetensors repo
    tiny = models[0]
    assert (tiny.downloads, tiny.likes, tiny.architecture, tiny.parameters) == (500, 2, "llama", 123_456)
    assert tiny.last_modified is not None and tiny.last_modified.startswith("2024-03-01")
    sent = [p for m, p, _, _ in hub.requests if p.startswith("/api/models?")]
    assert "filter=gguf" in sent[0] and "expand=gguf" in sent[0]


def test_search_sorts_and_limits(hub: FakeHub) -> None:
    assert [m.id for m in search_models("", sort="likes")] == ["zeta/Mini-Llama-GGUF", REPO]
    assert [m.id for m in search_models("", sort="modified")] == ["zeta/Mini-Llama-GGUF", REPO]
    assert [m.id for m in search_models("", sort="downloads", limit=1)] == [REPO]
    assert search_models("no-such-thing") == []
    with pytest.raises(HearthError, match="sort"):
        search_models("x", sort="size")  # type: ignore[arg-type]


def test_offline_mode_says_so_and_local_models_keep_working(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tiny_model: Path
) -> None:
    Library().import_file(tiny_model, mode="link")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="offline mode"):
        search_models("llama")
    with pytest.raises(OfflineError, match="offline mode"):
        repo_quants(REPO)
    assert hub.requests == []
    assert [m.name for m in Library().models()] == ["tiny-llama"]


def test_unknown_repo_is_a_clear_not_found(hub: FakeHub) -> None:
    with pytest.raises(NotFoundError, match="No model repository 'acme/Nope'"):
        repo_quants("acme/Nope")
    with pytest.raises(HearthError, match="not a Hub model id"):
        repo_quants("../../etc")


# -- files ------------------------------------------------------------------------------------------
def test_files_groups_quants_with_sizes_sha256_and_a_recommendation(hub: FakeHub) -> None:
    rq = repo_quants(REPO)
    repo = hub.repos[REPO]
    assert [g.name for g in rq.groups] == ["Q2_K", "Q4_K_M", "Q5_K_M", "Q8_0", "F16"]
    for g in rq.groups:
        assert g.size == sum(repo.files[f.path].size for f in g.files)
        assert all(f.sha256 == repo.files[f.path].sha256 for f in g.files)
    f16 = rq.group("F16")
    assert f16 is not None and len(f16.files) == 2 and f16.complete
    assert rq.recommended in {g.name for g in rq.groups}
    assert rq.fit_error is None, rq.fit_error
    kinds = {g.name: getattr(g.fit, "kind", None) for g in rq.groups}
    assert set(kinds.values()) <= {"full_gpu", "partial_gpu", "cpu", "too_large"}
    assert kinds[rq.recommended] != "too_large"
    # Only one header was read, and only part of it (range requests), not whole files.
    gets = [h for m, p, h, _ in hub.requests if m == "GET" and "/resolve/" in p]
    assert sum(hub.bytes_served.values()) < max(f.size for f in repo.files.values())
    assert len({p for m, p, _, _ in hub.requests if m == "GET" and "/resolve/" in p}) <= 1, gets
    data = rq.to_dict()
    assert sum(1 for q in data["quants"] if q["recommended"]) == 1


def test_files_without_a_readable_header_lists_without_verdicts(hub: FakeHub) -> None:
    hub.add_fault("error", status=500, times=1000, methods=("GET", "HEAD"))
    rq = repo_quants(REPO)
    assert [g.name for g in rq.groups] == ["Q2_K", "Q4_K_M", "Q5_K_M", "Q8_0", "F16"]
    assert all(g.fit is None for g in rq.groups)
    assert rq.fit_error and "header" in rq.fit_error
    assert rq.recommended == "Q4_K_M" and "no fit estimate" in rq.reason
