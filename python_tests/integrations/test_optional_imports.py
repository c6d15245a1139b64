"""The front-ends are optional: importing gmmkernels.integrations imports none of their libraries, and a front-end
whose library is missing raises an ImportError that names the extra to install (checked in a fresh interpreter
where the libraries are hidden)."""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys
    import gmmkernels.integrations
    import gmmkernels.integrations.distributions as d
    print("loaded:", sorted(m for m in ("sklearn", "diffusers", "pyro") if m in sys.modules))

    class Hide:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("sklearn", "diffusers", "pyro"):
                raise ImportError("hidden " + name)

    sys.meta_path.insert(0, Hide())
    for mod in ("gmmkernels.integrations.sklearn", "gmmkernels.integrations.diffusers"):
        try:
            __import__(mod)
        except ImportError as e:
            print("error:", e)
    try:
        d.PyroMixtureOfGaussians
    except ImportError as e:
        print("error:", e)
    print("plain:", type(d.MixtureOfGaussians).__name__)
""")


def test_front_ends_import_lazily_and_name_their_extra():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=True).stdout
    lines = out.splitlines()
    assert lines[0] == "loaded: []"
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 3
    for err, extra in zip(errors, ("sklearn", "diffusers", "pyro")):
        assert f"pip install 'gmmkernels[{extra}]'" in err
    assert lines[-1] == "plain: type"  # MixtureOfGaussians itself needs only torch
