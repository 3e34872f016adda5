"""README's first command: `ember demo` fits a small model with autograd and its loss falls."""
import subprocess
import sys

from ember.cli import demo


def test_demo_loss_falls(capsys):
    losses = demo(steps=120, seed=0)
    assert losses[-1] < 0.6 * losses[0]
    assert "loss" in capsys.readouterr().out


def test_cli_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "ember.cli", "demo", "--steps", "5"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "5 steps" in r.stdout
