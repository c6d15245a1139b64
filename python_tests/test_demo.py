"""What `gmmkernels demo` prints for a section: its summary lines and figures, or a compact fallback."""
import time

from gmmkernels import demo


def test_report_prints_summary_and_figures(tmp_path, capsys):
    png = tmp_path / "a.png"
    png.write_bytes(b"")
    res = {"summary": ["method A beats B: 0.12 vs 0.34 (lower is better)"],
           "figures": [{"path": str(png), "shows": "samples of A and B", "better": "tighter clusters"},
                       {"path": "skipped: matplotlib is not installed"}],
           "numbers": {"x": 1.0}}
    demo._report("m", res, tmp_path)
    out = capsys.readouterr().out.splitlines()
    assert out == ["[m]   method A beats B: 0.12 vs 0.34 (lower is better)",
                   f"[m]   figure {png}",
                   "[m]       shows: samples of A and B",
                   "[m]       better: tighter clusters",
                   "[m]   figure skipped: matplotlib is not installed"]


def test_report_falls_back_to_a_compact_rendering(tmp_path, capsys):
    (tmp_path / "grid.png").write_bytes(b"")
    res = {"n": 4000, "sw1": 0.123456789, "seconds": 3.0, "png": "grid.png",
           **{f"group{i}": {"a": {"b": 1.5}, "c": 2, "long": list(range(3)), "name": "x" * 300} for i in range(9)}}
    res["group0"].update({f"k{j}": float(j) for j in range(40)})
    demo._report("m", res, tmp_path)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[m]   n=4000, sw1=0.1235"  # "seconds" is printed by the caller
    assert out[1].startswith("[m]   group0: a.b=1.5, c=2, k0=0, k1=1") and out[1].endswith("...")
    assert all(len(line) <= len("[m]   ") + 110 for line in out)
    assert out[6] == "[m]   ... (4 more groups in summary.json)"
    assert out[7] == f"[m]   figure {tmp_path / 'grid.png'}" and len(out) == 8


def test_heartbeat_reports_a_silent_section(capsys):
    with demo._Heartbeat("slow", every=0.3):
        print("started")
        time.sleep(1.2)
    out = capsys.readouterr().out
    assert out.startswith("[slow]   started\n") and "[slow] still running (" in out
    with demo._Heartbeat("chatty", every=5):
        print("one line")
        print("two", end="")
        print(" parts\n[chatty] prefixed already\n")
    assert capsys.readouterr().out == "[chatty]   one line\n[chatty]   two parts\n[chatty] prefixed already\n\n"
