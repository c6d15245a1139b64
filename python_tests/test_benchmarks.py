"""Smoke test of the benchmark harness: one tiny CPU case end to end (check, time, JSON, table, plot)."""
import importlib
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

bench = importlib.import_module("benchmarks.bench_mixture_stats")  # a broken import fails here, not skips
from benchmarks import _harness as H  # noqa: E402

ROW_KEYS = {"op", "provider", "mode", "dtype", "device", "params", "ms", "first_call_ms", "gbps", "tflops",
            "peak_mem_mb", "errors_vs_fp64", "ok", "error", "speedup_vs_eager", "roofline"}
META_KEYS = {"gmmkernels", "git_sha", "git_dirty", "timestamp", "torch", "triton", "cuda", "device", "cpu",
             "num_threads", "build", "argv"}


def test_quick_cpu_benchmark_writes_valid_results(tmp_path):
    argv = ["--quick", "--device", "cpu", "--cov", "diag", "--modes", "fwd,fwd+bwd",
            "--providers", "torch-eager,gmmkernels-cpu",
            "--min-run-time", "0.01", "--out", str(tmp_path)]
    assert H.main_for(bench, argv) == 0
    files = list(tmp_path.glob("mixture_stats__cpu-*__*.json"))
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    assert doc["schema"] == "gmmkernels.bench/1"
    assert META_KEYS <= set(doc["meta"])
    rows = doc["results"]
    assert {r["mode"] for r in rows} == {"fwd", "fwd+bwd"}
    for r in rows:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        if r["error"] is None:
            assert r["ok"] is True, r
            assert r["ms"]["p20"] <= r["ms"]["p50"] <= r["ms"]["p80"]
            assert r["errors_vs_fp64"]["logp_max_abs"] < 1e-3
        else:
            assert r["ms"] is None
    eager = [r for r in rows if r["provider"] == "torch-eager"]
    assert eager and all(r["ok"] for r in eager)
    assert all(r["speedup_vs_eager"] == pytest.approx(1.0) for r in eager)
    bwd = next(r for r in eager if r["mode"] == "fwd+bwd")
    assert {"grad_x_rel_l2", "grad_means_rel_l2", "grad_scale_rel_l2", "grad_logits_rel_l2"} <= set(bwd["errors_vs_fp64"])

    from benchmarks import plot

    groups = plot.group_rows(plot.load_rows(files))
    table = plot.markdown(groups)
    assert "| case |" in table and "torch-eager" in table
    pngs = plot.plot_groups(groups, tmp_path / "plots")
    assert pngs and all(p.stat().st_size > 0 for p in pngs)


def test_unavailable_and_oversized_providers_become_error_rows():
    case = H.Case("mixture_stats", {"N": 64, "K": 4, "D": 3, "cov": "diag"}, "float32", "fwd", "cpu", "t")
    missing = H.Provider("missing", bench._eager_setup, available=lambda d: "not installed here")
    huge = H.Provider("huge", bench._eager_setup, nkd_temporaries={"fwd": 1 << 40})

    def boom(case, inputs):
        raise RuntimeError("kernel exploded")

    broken = H.Provider("broken", boom)
    rows = H.run_cases(bench.SPEC, [case], [missing, huge, broken], min_run_time=0.01, log=lambda s: None)
    by = {r["provider"]: r for r in rows}
    assert by["missing"]["error"].startswith("unavailable")
    assert by["huge"]["error"].startswith("skipped") and "OOM" in by["huge"]["error"]
    assert "kernel exploded" in by["broken"]["error"]
    assert all(r["ms"] is None for r in rows)


def test_roofline_picks_the_binding_limit():
    # 2-D toy, K=1024 (docs/kernels.md (mixture_stats)): exp-bound at ~0.27 ms on an H100
    c = H.Counts(flops=1.6e10, bytes=20e6, exps=1e6 * 1024)
    rl = H.roofline(c, 1.0, "ieee", "NVIDIA H100 80GB HBM3")
    assert rl["bound"] == "exp" and rl["t_min_ms"] == pytest.approx(0.2626, rel=1e-2)
    assert rl["fraction"] == pytest.approx(rl["t_min_ms"])
    assert H.roofline(c, 1.0, "ieee", "cpu: some cpu") is None


def test_run_all_only_names_and_unknown_names(tmp_path, capsys):
    from benchmarks import run_all

    with pytest.raises(SystemExit) as e:
        run_all.main(["--quick", "--device", "cpu", "--out", str(tmp_path), "--only", "no_such_op"])
    assert e.value.code == 2
    assert "no benchmark named no_such_op" in capsys.readouterr().err
    # short names work and a standalone script's JSON carries the harness metadata
    assert run_all.main(["--quick", "--device", "cpu", "--out", str(tmp_path), "--only", "gibbs_sweep", "--no-plots"]) == 0
    files = list(tmp_path.glob("gibbs_sweep__cpu-*__*.json"))
    assert len(files) == 1
    assert META_KEYS <= set(json.loads(files[0].read_text())["meta"])


def test_fit_em_benchmark_end_to_end(tmp_path):
    """bench_fit_em on a tiny case in two timing rounds: the JSON row (lower bounds equal to scikit-learn's when it
    is installed, the FMA bound from each round's probe, the medians over the rounds), then the figure from that
    file."""
    import statistics

    fe = importlib.import_module("benchmarks.bench_fit_em")
    argv = ["--quick", "--device", "cpu", "--cases", "headline", "--dtypes", "float64", "--iters", "3", "--reps", "1",
            "--rounds", "2", "--threads", "1", "--out", str(tmp_path)]
    assert fe.main(argv) == 0
    (f,) = tmp_path.glob("fit_em__cpu*__*.json")
    rows = json.loads(f.read_text())["results"]
    assert rows and all(r["ok"] is not False for r in rows)
    for r in rows:
        fb = r["fma_bound"]
        # a difference of two single timings of a tiny fit: finite, but under load it may come out <= 0 (the
        # benchmark says so); the real cases time 20 iterations of at least 10^5 points
        assert fb["t_min_ms"] > 0 and all(math.isfinite(t) for t in r["per_iter_ms_rounds"])
        assert len(r["per_iter_ms_rounds"]) == len(fb["t_min_ms_rounds"]) == len(fb["x_bound_iter_rounds"]) == 2
        assert r["per_iter_ms"] == statistics.median(r["per_iter_ms_rounds"])
        assert fb["x_bound_iter"] == pytest.approx(statistics.median(
            [t / b for t, b in zip(r["per_iter_ms_rounds"], fb["t_min_ms_rounds"])]))
        if r.get("sklearn"):
            assert r["lower_bound_rel_diff"] < 1e-9
        gc = r["gemm_control"]
        assert len(gc["ms_rounds"]) == 2 and all(t > 0 for t in gc["ms_rounds"])
        assert gc["ms"] == statistics.median(gc["ms_rounds"])
        assert gc["x_bound"] == pytest.approx(statistics.median(
            [g / b for g, b in zip(gc["ms_rounds"], fb["t_min_ms_rounds"])]))
    with pytest.raises(SystemExit, match="at least 1"):
        fe.main(["--device", "cpu", "--rounds", "0", "--no-write"])
    pytest.importorskip("matplotlib")
    assert fe.main(["--plot", str(f), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "plots" / f"fit_em__{f.stem.split('__', 1)[1]}.png").stat().st_size > 0


@pytest.mark.parametrize("cov,D", [("diag", 5), ("spherical", 3), ("full", 4)])
def test_fit_em_gemm_control_counts_the_bounds_fmas(cov, D):
    """The GEMM control of bench_fit_em: its two products hold exactly the multiply-adds that the FMA bound counts
    (2 N K P = fmas(N, K, D, cov)), and they are the products they claim (checked against einsum on the same
    operands)."""
    fe = importlib.import_module("benchmarks.bench_fit_em")
    import torch

    from benchmarks.bench_mixture_em_stats import fmas

    N, K = 37, 3
    P = fe.gemm_features(N, K, D, cov)
    assert 2 * N * K * P == fmas(N, K, D, cov)
    run = fe.gemm_control(N, K, D, cov, torch.float64, "cpu")
    F, A, R = (run.operands[k] for k in "FAR")
    assert F.shape == (N, P) and A.shape == (P, K) and R.shape == (N, K)
    logits, stats = run()
    torch.testing.assert_close(logits, torch.einsum("np,pk->nk", F, A))
    torch.testing.assert_close(stats, torch.einsum("np,nk->pk", F, R))
    assert all(float(t.min()) >= 0.5 and float(t.max()) < 1.0 for t in (F, A, R))


def test_fit_em_ab_mode_pairs_three_ways_and_restores_fit_em(tmp_path):
    """bench_fit_em --ab: one row per way and case, the native loop's ratio to itself 1 in every round, and fit_em's
    own functions put back afterwards (the rounds patch them)."""
    fe = importlib.import_module("benchmarks.bench_fit_em")
    import gmmkernels.fit.em as em

    before = (em.em_iterate_kernel, em.mstep_backend)
    argv = ["--ab", "2", "--quick", "--device", "cpu", "--cases", "headline", "--dtypes", "float32", "--iters", "2",
            "--reps", "1", "--threads", "1", "--out", str(tmp_path)]
    assert fe.main(argv) == 0
    assert (em.em_iterate_kernel, em.mstep_backend) == before
    (f,) = tmp_path.glob("fit_em_ab__cpu*__*.json")
    rows = json.loads(f.read_text())["results"]
    assert sorted({r["provider"] for r in rows}) == ["host-mstep", "native-loop", "python-loop"]
    for r in rows:
        assert len(r["per_iter_ms_rounds"]) == 2
        if r["provider"] == "native-loop":
            assert r["ratio_to_native_loop"] == {"min": 1.0, "median": 1.0, "max": 1.0}


def test_ab_checkouts_pairs_two_workers(tmp_path):
    """benchmarks/ab_checkouts.py with this checkout as both arms: one row per case, one timing per round and arm,
    the per-round ratios summarised; bad arguments stop with a message, not a traceback."""
    ab = importlib.import_module("benchmarks.ab_checkouts")
    repo = Path(__file__).resolve().parent.parent
    argv = [str(repo), str(repo), "--cases", "diag:float64:300,full:float32:200", "--rounds", "3", "--out",
            str(tmp_path)]
    assert ab.main(argv) == 0
    (f,) = tmp_path.glob("mixture_em_stats_ab__cpu-1t__*.json")
    doc = json.loads(f.read_text())
    assert [r["case"] for r in doc["results"]] == ["diag:float64:300", "full:float32:200"]
    for r in doc["results"]:
        a, b = r["ns_per_row"]["A"], r["ns_per_row"]["B"]
        assert len(a) == len(b) == 3 and min(a) > 0 and min(b) > 0
        ratios = sorted(y / x for x, y in zip(a, b))
        assert r["ratio_b_over_a"]["median"] == pytest.approx(ratios[1])
    assert doc["meta"]["a"]["commit"] == doc["meta"]["b"]["commit"]
    assert all(r["params"]["clock"] == "process" for r in doc["results"])
    # elapsed time instead of CPU time (several threads): the same rows, the clock recorded
    assert ab.main(argv[:-1] + [str(tmp_path / "wall"), "--clock", "wall"]) == 0
    (f,) = (tmp_path / "wall").glob("mixture_em_stats_ab__cpu-1t__*.json")
    rows = json.loads(f.read_text())["results"]
    assert len(rows) == 2 and all(r["params"]["clock"] == "wall" and min(r["ns_per_row"]["B"]) > 0 for r in rows)
    # the generating mixture instead of the start: recorded, and its workers run
    assert ab.main(argv[:-1] + [str(tmp_path / "true"), "--mixture", "true"]) == 0
    (f,) = (tmp_path / "true").glob("mixture_em_stats_ab__cpu-1t__*.json")
    rows = json.loads(f.read_text())["results"]
    assert len(rows) == 2 and all(r["params"]["mixture"] == "true" and min(r["ns_per_row"]["A"]) > 0 for r in rows)
    # several warm passes per round: their median, the count recorded; 0 passes is refused
    assert ab.main(argv[:-1] + [str(tmp_path / "warm"), "--passes", "3"]) == 0
    (f,) = (tmp_path / "warm").glob("mixture_em_stats_ab__cpu-1t__*.json")
    rows = json.loads(f.read_text())["results"]
    assert len(rows) == 2 and all(r["params"]["passes"] == 3 and len(r["ns_per_row"]["A"]) == 3 for r in rows)
    with pytest.raises(SystemExit):
        ab.main(argv[:-1] + [str(tmp_path / "none"), "--passes", "0"])
    # the native EM loop as the timed unit (spherical too): recorded, its workers run; a negative count is refused
    it_argv = [str(repo), str(repo), "--cases", "spherical:float64:300,full:float32:200", "--rounds", "3", "--out",
               str(tmp_path / "iterate"), "--iterate", "2"]
    assert ab.main(it_argv) == 0
    (f,) = (tmp_path / "iterate").glob("mixture_em_stats_ab__cpu-1t__*.json")
    rows = json.loads(f.read_text())["results"]
    assert len(rows) == 2 and all(r["params"]["iterate"] == 2 and min(r["ns_per_row"]["B"]) > 0 for r in rows)
    with pytest.raises(SystemExit):
        ab.main(it_argv[:-1] + ["-1"])
    with pytest.raises(SystemExit, match="cov:dtype:N"):
        ab.main([str(repo), str(repo), "--cases", "diag:float64"])
    with pytest.raises(SystemExit, match="bad case"):
        ab.main([str(repo), str(repo), "--cases", "diagonal:float64:10"])
    with pytest.raises(SystemExit):
        ab.main([str(repo), str(tmp_path)])  # not a checkout


def test_ptxas_report_parses_entries_their_properties_and_skips_device_functions():
    """benchmarks/ptxas_report.py: each entry function gets its own properties line (named by the "Function properties
    for" line before it) and the register line after it; device functions' properties are not reported."""
    from benchmarks.ptxas_report import parse_ptxas

    log = "\n".join([
        "ptxas info    : 0 bytes gmem",
        "ptxas info    : Function properties for helper_fn",
        "    8 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads",
        "ptxas info    : Compiling entry function 'kern_a' for 'sm_90'",
        "ptxas info    : Function properties for kern_a",
        "    72 bytes stack frame, 36 bytes spill stores, 40 bytes spill loads",
        "ptxas info    : Used 64 registers, used 1 barriers, 72 bytes cumulative stack size, 1024 bytes smem",
        "ptxas info    : Compile time = 9.5 ms",
        "ptxas info    : Compiling entry function 'kern_b' for 'sm_90'",
        "ptxas info    : Function properties for kern_b",
        "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads",
        "ptxas info    : Used 255 registers, used 0 barriers",
    ])
    rows = {r["kernel"]: r for r in parse_ptxas(log)}
    assert set(rows) == {"kern_a", "kern_b"}
    assert rows["kern_a"] == dict(kernel="kern_a", registers=64, smem_bytes=1024, stack_bytes=72, spill_store_bytes=36,
                                  spill_load_bytes=40)
    assert rows["kern_b"]["registers"] == 255 and rows["kern_b"]["spill_store_bytes"] == 0
    assert rows["kern_b"]["smem_bytes"] == 0
