"""Data pipeline: stdlib corpus split, BPE tokenizer, packed cache (reuse, atomicity), batches, MLM masking."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import sigprop.data.cache as cache_mod
from sigprop.data import cache_entries, load_data, mlm_mask, split_of, stdlib_files
from sigprop.data.cache import is_valid_entry
from sigprop.data.corpus import stdlib_corpus, stdlib_root
from sigprop.data.packed import batch_indices
from sigprop.errors import SigpropError

SMALL = dict(source="code", vocab_size=2048, seq_len=64, max_bytes=1_000_000, progress=False)
TINY = dict(source="code", vocab_size=512, seq_len=32, max_bytes=200_000, progress=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_data(cache_dir=tmp_path_factory.mktemp("cache"), **SMALL)


def _one_line_error(excinfo, *needles: str) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg


# ----------------------------------------------------------------------------- corpus and split

def test_stdlib_listing_excludes_installed_packages(tmp_path):
    for rel in ("a.py", "pkg/b.py", "pkg/notes.txt", "site-packages/torch/c.py", "pkg/dist-packages/d.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    assert stdlib_files(tmp_path) == ["a.py", "pkg/b.py"]


def test_split_by_file_is_disjoint_complete_and_stable():
    files = stdlib_files()
    assert len(files) > 500 and files == sorted(files)
    assert not any("site-packages" in f or "dist-packages" in f for f in files)
    corpus = stdlib_corpus(val_fraction=0.05)
    train, val = [d.name for d in corpus.train], [d.name for d in corpus.val]
    assert not set(train) & set(val)
    assert sorted(train + val) == files
    assert all(split_of(n, 0.05) == "val" for n in val) and all(split_of(n, 0.05) == "train" for n in train)
    assert 0.02 < len(val) / len(files) < 0.09  # ~5% by hash
    # a larger validation fraction only moves files train -> val, never back
    assert set(val) <= {d.name for d in stdlib_corpus(val_fraction=0.2).val}


def test_cached_entry_records_disjoint_splits(data):
    files = data.files()
    assert files["train"] and files["val"] and not set(files["train"]) & set(files["val"])
    assert set(files["train"] + files["val"]) <= set(stdlib_files())
    fp = data.fingerprint
    assert (fp["files_train"], fp["files_val"]) == (len(files["train"]), len(files["val"]))
    assert 0.9e6 <= fp["bytes"] <= 1.2e6  # max_bytes caps each split at its share (plus one file)
    json.dumps(fp)  # JSON-serialisable, as runs store it


# ----------------------------------------------------------------------------- build, reuse, determinism

def test_building_twice_is_identical_and_second_load_reuses(data, tmp_path, monkeypatch):
    other = load_data(cache_dir=tmp_path, **SMALL)  # an independent build from scratch
    assert other.fingerprint == data.fingerprint
    assert other.tokenizer.to_str() == data.tokenizer.to_str()
    np.testing.assert_array_equal(other.train, data.train)
    np.testing.assert_array_equal(other.val, data.val)

    stamps = {f.name: f.stat().st_mtime_ns for f in other.path.iterdir()}
    monkeypatch.setattr(cache_mod, "build_entry", lambda *a, **k: pytest.fail("second load rebuilt the cache"))
    again = load_data(cache_dir=tmp_path, **SMALL)
    assert again.path == other.path
    assert {f.name: f.stat().st_mtime_ns for f in again.path.iterdir()} == stamps
    assert [e["name"] for e in cache_entries(tmp_path)] == [other.path.name]


def test_settings_change_the_cache_entry(data, tmp_path):
    small = load_data(cache_dir=tmp_path, **TINY)
    longer = load_data(cache_dir=tmp_path, **(TINY | {"seq_len": 48}))
    assert small.path != longer.path and small.path.parent == longer.path.parent
    assert small.fingerprint["tokenizer_sha256"] == longer.fingerprint["tokenizer_sha256"]  # same corpus and vocab
    assert longer.train.shape[1] == 49 and len(cache_entries(tmp_path)) == 2


def test_rows_shape_dtype_and_round_trip_to_source(data):
    assert data.train.dtype == np.uint16 and data.val.dtype == np.uint16
    assert data.train.ndim == 2 and data.train.shape[1] == data.seq_len + 1 and len(data.val) > 10
    assert isinstance(data.train, np.memmap)
    assert data.tokenizer.get_vocab_size() == data.vocab_size == 2048
    assert data.special == {"eot": 0, "pad": 1, "mask": 2}
    assert int(data.train.max()) < data.vocab_size
    meta = json.loads((data.path / "meta.json").read_text())
    assert meta["shapes"]["train"] == list(data.train.shape)
    assert meta["fingerprint"]["tokens_train"] >= data.train.size > meta["fingerprint"]["tokens_train"] - (data.seq_len + 1)

    # the stream is file_1 EOT file_2 EOT ...: decoding between EOTs gives back the source files exactly
    stream = np.asarray(data.train).reshape(-1)
    eots = np.flatnonzero(stream == data.special["eot"])
    assert len(eots) >= data.fingerprint["files_train"] - 5  # only docs in the dropped last partial row are missing
    first, second = data.files()["train"][:2]
    assert data.tokenizer.decode(stream[: eots[0]].tolist()) == (stdlib_root() / first).read_text(encoding="utf-8", errors="replace")
    assert data.tokenizer.decode(stream[eots[0] + 1 : eots[1]].tolist()) == (stdlib_root() / second).read_text(encoding="utf-8", errors="replace")
    text = data.tokenizer.decode(data.val[:20].reshape(-1).tolist())
    assert "def " in text and ("import " in text or "return" in text)
    assert data.special["pad"] not in stream and data.special["mask"] not in stream


# ----------------------------------------------------------------------------- batches

def test_batch_is_a_pure_function_of_split_step_seed(data):
    b = data.batch("train", 8, step=5, seed=1)
    assert b.dtype == torch.long and b.shape == (8, data.seq_len + 1)
    assert torch.equal(b, data.batch("train", 8, step=5, seed=1))
    reloaded = load_data(cache_dir=data.path.parent, **SMALL)  # a resumed run: fresh object, same batches
    assert torch.equal(b, reloaded.batch("train", 8, step=5, seed=1))
    assert not torch.equal(b, data.batch("train", 8, step=6, seed=1))
    assert not torch.equal(b, data.batch("train", 8, step=5, seed=2))
    assert not torch.equal(data.batch("train", 8, 0), data.batch("val", 8, 0))
    idx = batch_indices(len(data.train), 8, 5, 1, 0)
    assert torch.equal(b, torch.from_numpy(data.train[idx].astype(np.int64)))


def test_batches_cover_every_row_once_per_epoch():
    n, bs = 53, 7  # batches straddle epoch boundaries
    stream = np.concatenate([batch_indices(n, bs, step, seed=3, split=0) for step in range(3 * n // bs + 1)])
    for epoch in range(3):
        assert sorted(stream[epoch * n : (epoch + 1) * n]) == list(range(n))
    assert not np.array_equal(stream[:n], stream[n : 2 * n])  # a fresh order each epoch
    assert not np.array_equal(stream[:n], np.arange(n))


def test_val_epoch_through_batch_and_probe_batch(data):
    n = len(data.val)
    epoch = data.batch("val", n, 0).numpy()
    assert sorted(map(bytes, epoch.astype(np.uint16))) == sorted(map(bytes, np.asarray(data.val)))
    p = data.probe_batch(16)
    assert p.shape == (16, data.seq_len + 1) and torch.equal(p, data.probe_batch(16))
    assert not torch.equal(p, data.probe_batch(16, seed=1))
    val_rows = {bytes(r) for r in np.asarray(data.val)}
    assert all(bytes(r) in val_rows for r in p.numpy().astype(np.uint16))
    with pytest.raises(SigpropError) as e:
        data.batch("test", 4, 0)
    _one_line_error(e, "'test'", "train", "val")
    with pytest.raises(SigpropError):
        data.batch("train", 0, 0)


# ----------------------------------------------------------------------------- MLM masking

def test_mlm_mask_proportions_and_specials():
    g = torch.Generator().manual_seed(0)
    vocab, specials = 1000, (0, 1, 2)
    tokens = torch.randint(3, vocab, (2000, 128), generator=g)
    tokens[:, ::10] = 0  # EOT
    tokens[:, 5::10] = 1  # pad
    inputs, targets = mlm_mask(tokens, mask_id=2, vocab_size=vocab, p=0.25, generator=g, special_ids=specials)
    special = torch.isin(tokens, torch.tensor(specials))
    chosen = targets != -100
    assert not (chosen & special).any() and torch.equal(inputs[special], tokens[special])
    assert abs(chosen[~special].float().mean().item() - 0.25) < 0.005
    assert torch.equal(targets[chosen], tokens[chosen]) and torch.equal(inputs[~chosen], tokens[~chosen])
    masked = (inputs == 2) & chosen
    unchanged = (inputs == tokens) & chosen
    randomised = chosen & ~masked & ~unchanged
    n = chosen.sum().item()
    assert abs(masked.sum().item() / n - 0.8) < 0.01
    assert abs(unchanged.sum().item() / n - 0.1) < 0.01  # + 0.1/997 chance the random token is the original
    assert abs(randomised.sum().item() / n - 0.1) < 0.01
    assert not torch.isin(inputs[randomised], torch.tensor(specials)).any()
    assert inputs[randomised].max() < vocab and inputs.dtype == tokens.dtype
    # same generator state, same masking
    again = mlm_mask(tokens, 2, vocab, generator=torch.Generator().manual_seed(7), special_ids=specials)
    assert all(torch.equal(a, b) for a, b in zip(again, mlm_mask(tokens, 2, vocab, generator=torch.Generator().manual_seed(7), special_ids=specials)))
    with pytest.raises(SigpropError):
        mlm_mask(tokens, 2, vocab, p=1.5)


def test_mlm_mask_on_real_rows(data):
    x = torch.from_numpy(np.asarray(data.train).astype(np.int64))  # all rows: ~45 documents, so EOTs occur
    inputs, targets = mlm_mask(x, data.special["mask"], data.vocab_size, generator=torch.Generator().manual_seed(0),
                               special_ids=data.special_ids)
    eot = x == data.special["eot"]
    assert eot.any() and (targets[eot] == -100).all()
    assert 0.2 < (targets != -100).float().mean().item() < 0.3


# ----------------------------------------------------------------------------- CodeParrot format, offline

def _write_records(path: Path, n: int = 40) -> list[dict]:
    recs = [{"repo_name": f"user{i % 7}/proj", "path": rel, "content": (stdlib_root() / rel).read_text(encoding="utf-8", errors="replace")}
            for i, rel in enumerate(f for f in stdlib_files() if f.startswith("json/") or f.startswith("email/"))][:n]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_local_codeparrot_jsonl_offline(tmp_path, offline):
    folder = tmp_path / "records"
    folder.mkdir()
    recs = _write_records(folder / "part-0.jsonl")
    d = load_data(str(folder / "part-0.jsonl"), vocab_size=512, seq_len=32, cache_dir=tmp_path / "cache", progress=False)
    names = [f"{r['repo_name']}/{r['path']}" for r in recs]
    files = d.files()
    assert sorted(files["train"] + files["val"]) == sorted(names) and files["val"]
    assert all(split_of(n, 0.05) == "val" for n in files["val"])
    assert d.fingerprint["bytes"] == sum(len(r["content"].encode()) for r in recs)
    assert d.fingerprint["source"].endswith("part-0.jsonl") and len(d.train) > 0
    stream = np.asarray(d.train).reshape(-1)
    first = next(r for r, n in zip(recs, names) if n == files["train"][0])
    assert d.tokenizer.decode(stream[: np.argmax(stream == d.special["eot"])].tolist()) == first["content"]
    # a folder of record files goes through the same path
    d2 = load_data(folder, vocab_size=512, seq_len=32, cache_dir=tmp_path / "cache", progress=False, max_bytes=60_000)
    assert d2.fingerprint["bytes"] < d.fingerprint["bytes"] and d2.path != d.path


def test_codeparrot_without_network_fails_in_one_line(tmp_path, offline):
    with pytest.raises(SigpropError) as e:
        load_data("codeparrot", cache_dir=tmp_path, progress=False)
    _one_line_error(e, "codeparrot", "source='code'")
    assert cache_entries(tmp_path) == [] and list(tmp_path.iterdir()) == []


def test_records_without_content_field(tmp_path, offline):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"repo_name": "a", "path": "b.py", "text": "x = 1"}) + "\n")
    with pytest.raises(SigpropError) as e:
        load_data(str(tmp_path / "bad.jsonl"), vocab_size=512, cache_dir=tmp_path / "cache", progress=False)
    _one_line_error(e, "content")


@pytest.mark.parametrize(
    "kwargs, needles",
    [
        ({"source": "wikipedia"}, ("'wikipedia'", "code", "codeparrot", ".jsonl")),
        ({"source": 3}, ("3", "code")),
        ({"vocab_size": 100}, ("vocab_size", "100", "65536")),
        ({"vocab_size": 70_000}, ("vocab_size", "70000")),
        ({"seq_len": 0}, ("seq_len", "0")),
        ({"val_fraction": 1.0}, ("val_fraction", "1.0")),
        ({"max_bytes": -5}, ("max_bytes", "-5")),
    ],
)
def test_bad_arguments_give_one_line_errors(tmp_path, kwargs, needles):
    with pytest.raises(SigpropError) as e:
        load_data(**({"cache_dir": tmp_path, "progress": False} | kwargs))
    _one_line_error(e, *needles)


def test_too_small_corpus_for_seq_len(tmp_path):
    with pytest.raises(SigpropError) as e:
        load_data(cache_dir=tmp_path, **(TINY | {"max_bytes": 20_000, "seq_len": 4096}))
    _one_line_error(e, "too small", "4096")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- atomic cache

def test_interrupted_build_leaves_no_valid_entry(tmp_path, monkeypatch):
    real = cache_mod.cut_rows

    def cut_then_interrupt(path, n_tokens, seq_len):
        shape = real(path, n_tokens, seq_len)
        if path.name == "val.bin":
            raise KeyboardInterrupt  # Ctrl-C after both .bin files exist
        return shape

    monkeypatch.setattr(cache_mod, "cut_rows", cut_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        load_data(cache_dir=tmp_path, **TINY)
    assert list(tmp_path.iterdir()) == [] and cache_entries(tmp_path) == []

    monkeypatch.setattr(cache_mod, "cut_rows", real)
    d = load_data(cache_dir=tmp_path, **TINY)  # the next load builds a complete entry
    assert is_valid_entry(d.path) and [e["name"] for e in cache_entries(tmp_path)] == [d.path.name]


def test_damaged_entry_is_rebuilt(tmp_path):
    d = load_data(cache_dir=tmp_path, **TINY)
    rows = np.asarray(d.train).copy()
    del d
    with open(next(tmp_path.glob("*/train.bin")), "r+b") as f:
        f.truncate(100)  # e.g. a disk filled up while copying the cache
    entry = next(tmp_path.iterdir())
    assert not is_valid_entry(entry) and cache_entries(tmp_path) == []
    again = load_data(cache_dir=tmp_path, **TINY)
    assert again.path == entry and is_valid_entry(entry)
    np.testing.assert_array_equal(again.train, rows)


# ----------------------------------------------------------------------------- CLI

def test_cli_prepare_and_info(data, monkeypatch):
    from sigprop.cli import app
    from sigprop.cli.app import console

    monkeypatch.setattr(console, "width", 250)  # the shared console fixed its width at import

    root = str(data.path.parent)
    args = ["--vocab-size", "2048", "--seq-len", "64", "--max-bytes", "1000000", "--cache-dir", root]
    out = CliRunner().invoke(app, ["data", "prepare", *args])
    assert out.exit_code == 0, out.output
    assert f"{len(data.train):,}" in out.output and data.fingerprint["sha256"][:16] in out.output
    assert data.path.name in out.output
    info = CliRunner().invoke(app, ["data", "info", "--cache-dir", root])
    assert info.exit_code == 0 and data.path.name in info.output and data.fingerprint["sha256"][:12] in info.output
    bad = CliRunner().invoke(app, ["data", "prepare", "--source", "nowhere", "--cache-dir", root])
    assert isinstance(bad.exception, SigpropError)


# ----------------------------------------------------------------------------- stdlib + installed packages

def _fake_site(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_packages_source_adds_site_packages_in_a_hashed_order(tmp_path, monkeypatch):
    import hashlib

    import sigprop.data.corpus as corpus

    site = _fake_site(tmp_path / "site", {"torch/nn.py": "import math\n" * 50, "numpy/core.py": "x = [1, 2]\n" * 80,
                                          "numpy/__pycache__/core.cpython-311.py": "cached\n", "README.txt": "not code"})
    monkeypatch.setattr(corpus, "package_roots", lambda: [site])
    docs = list(corpus.package_documents())
    names = [d.name for d in docs]
    assert {"site/torch/nn.py", "site/numpy/core.py"} <= set(names)
    assert not any("__pycache__" in n or n.endswith(".txt") for n in names)
    assert sum(n.startswith("stdlib/") for n in names) == len(stdlib_files())  # the stdlib, every file, prefixed
    assert names == sorted(names, key=lambda n: hashlib.sha256(n.encode()).digest())  # a cap samples across packages
    before = corpus.packages_identity()
    _fake_site(site, {"scipy/linalg.py": "y = 2\n"})
    assert corpus.packages_identity()["listing_sha256"] != before["listing_sha256"]  # a new package, a new cache entry


def test_packages_source_builds_a_cache_entry_of_its_own(tmp_path, monkeypatch):
    import sigprop.data.corpus as corpus

    site = _fake_site(tmp_path / "site", {f"pkg{i}/mod.py": f"def f{i}(x):\n    return x + {i}\n" * 40 for i in range(30)})
    monkeypatch.setattr(corpus, "package_roots", lambda: [site])
    d = load_data(cache_dir=tmp_path / "cache", **{**TINY, "source": "packages"})
    fp = d.fingerprint
    assert fp["source"] == "packages" and fp["rows_train"] > 0 and fp["rows_val"] > 0
    files = json.loads((d.path / "files.json").read_text())
    assert not set(files["train"]) & set(files["val"])
    assert d.path.name.startswith("packages-v512-t32-")
    code = load_data(cache_dir=tmp_path / "cache", **TINY)
    assert code.path != d.path  # never mixed with the stdlib-only entry
