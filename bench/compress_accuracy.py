"""Accuracy of ember.deploy's compression methods on the flagship CNN trained on Fashion-MNIST.

    python3 bench/compress_accuracy.py                       # train the baseline as `ember train` does
    python3 bench/compress_accuracy.py --checkpoint runs/fashion_mnist   # or reuse its checkpoint
    python3 bench/compress_accuracy.py --epochs 1 --finetune-epochs 1 --subset 10000   # a quick run

One run prints one table: the test accuracy (the 10,000 test images) of each compressed model and
its change against the fp32 baseline, in points, next to the target the compression issue sets:

1. baseline: the recipe's FashionCNN trained by the recipe's own `train` (AdamW, cosine schedule,
   batch 128, the step under ember.jit), or loaded from a checkpoint it wrote;
2. weight-only int8 (`qdq.quantize_weight_only`), with and without bias correction: <= 1 point;
3. static int8 (`qdq.quantize_static`, calibrated on 1000 training images), reduce_range off and
   on, and with `correction.correct_bias` (on the BN-folded model, before quantize_static): <= 1;
4. QAT: `qat.prepare_qat` of the trained model, fine-tuned one epoch at a small lr, `qat.convert`:
   <= 0.5 point;
5. 90% global magnitude pruning of every conv / linear weight, raised by a `prune.PruningSchedule`
   during the fine-tuning, then `prune.remove`: <= 1 point (the sparsity report is printed);
6. distillation: a half-width student (half the channels / units of every layer) trained alone and
   trained by a `distill.Distiller` (`KDLoss` plus a FitNet hint), the same epochs, seed, data
   order and initial weights; the target is that the distilled student beats the one trained
   alone. The teacher is the baseline's model trained by the same recipe for --kd-teacher-epochs
   (default 10; 0: the baseline itself); the settings tried are --kd T:ALPHA (default 1:0.9) with
   --kd-hint LAYER[:WEIGHT] (default features.6:1, the second ReLU's output, regressed by a 1x1
   conv onto the teacher's); --kd-seeds N (default 3) repeats every student over N seeds and
   compares the means (a single seed varies by about 0.3 point).

Every training run after the baseline uses the recipe's loop (`fit` below: the same loader, AdamW,
weight decay, cosine schedule over the run and jitted step), with its own epochs and learning rate.
QAT runs its first `--qat-observe-steps` steps eagerly so that the observers set the qparams, then
freezes them (`qat.disable_observer`) and jits the rest (observers read values on the host).
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import ember
from ember import nn
from ember.data import DataLoader, TensorDataset
from ember.datasets import DatasetError, FashionMNIST
from ember.deploy import correction, distill, prune, qat, qdq
from ember.recipes import fashion_mnist as recipe

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data" / "fashion-mnist"
DEFAULT_CHECKPOINT = "runs/fashion_mnist"  # `ember train`'s default --out
DEFAULT_KD = ((1.0, 0.9),)  # the distillation settings run by default (T, alpha); see the docstring
DEFAULT_KD_HINT = "features.6:1"  # the FitNet hint every distilled student gets: the second ReLU's output


# ------------------------------------------------------------------ data
def find_data(data: str | None = None) -> str | None:
    """The folder to read Fashion-MNIST from: `data`, else ../shared/data/fashion-mnist next to the
    checkout when it holds the files, else None (ember.datasets then searches $EMBER_DATA,
    ~/.cache/ember and /usr/share/datasets)."""
    if data:
        return data
    if (SHARED_DATA / "t10k-images-idx3-ubyte.gz").is_file():
        return str(SHARED_DATA)
    return None


def data_available(data: str | None = None) -> bool:
    """Whether Fashion-MNIST can be read without a download."""
    try:
        FashionMNIST(find_data(data), train=False, download=False)
    except DatasetError:
        return False
    return True


@dataclass
class Data:
    x_train: object
    y_train: object
    x_test: object
    y_test: object
    folder: str | None


def load_data(data: str | None = None, subset: int | None = None, test_subset: int | None = None) -> Data:
    """The recipe's tensors (standardized as in training): the first `subset` training images and the
    first `test_subset` test images (all of them when None)."""
    folder = find_data(data)
    x_train, y_train = FashionMNIST(folder, train=True, download=True).as_tensors(standardize=True)
    x_test, y_test = FashionMNIST(folder, train=False, download=True).as_tensors(standardize=True)
    if subset:
        x_train, y_train = x_train[:subset], y_train[:subset]
    if test_subset:
        x_test, y_test = x_test[:test_subset], y_test[:test_subset]
    return Data(x_train, y_train, x_test, y_test, folder)


def calibration_loader(d: Data, n: int = 1000, batch_size: int = 100, seed: int = 0) -> list:
    """`n` training images drawn at random (fixed seed), as a list of (x, y) batches (reusable)."""
    n = min(n, len(d.y_train))
    idx = np.sort(np.random.default_rng(seed).permutation(len(d.y_train))[:n])
    x = ember.tensor(d.x_train.numpy()[idx])
    y = ember.tensor(d.y_train.numpy()[idx])
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)]


# ------------------------------------------------------------------ training
def fit(model: nn.Module, loss_fn, d: Data, epochs: int, lr: float, *, seed: int = 0, jit: bool = True,
        params=None, before_step=None, eager_steps: int = 0, after_eager=None, batch_size: int = 128,
        weight_decay: float = recipe.Config.weight_decay) -> int:
    """The recipe's training loop with another loss / lr / epoch count: shuffled batches of 128
    (drop_last, the loader's generator seeded with `seed`), AdamW, a cosine schedule over the run,
    the step jitted. `before_step(t)` runs before step t (pruning); the first `eager_steps` steps
    run eagerly, then `after_eager()` (freezing QAT observers). Returns the number of steps."""
    loader = DataLoader(TensorDataset(d.x_train, d.y_train), batch_size=batch_size, shuffle=True,
                        drop_last=True, generator=ember.Generator().manual_seed(seed))
    opt = ember.optim.AdamW(list(params if params is not None else model.parameters()), lr=lr,
                            weight_decay=weight_decay)
    sched = ember.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * len(loader)))

    def step(x, y):
        loss = loss_fn(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    jitted = ember.jit(step) if jit else step
    t = 0
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            if before_step is not None:
                before_step(t)
            if t < eager_steps:
                step(x, y)
                if t == eager_steps - 1 and after_eager is not None:
                    after_eager()
            else:
                jitted(x, y)
            sched.step()
            t += 1
    if eager_steps and t < eager_steps and after_eager is not None:
        after_eager()
    model.eval()
    return t


def ce_loss(model: nn.Module):
    ce = nn.CrossEntropyLoss()
    return lambda x, y: ce(model(x), y)


def half_width(channels: tuple) -> tuple:
    """(c1, c2, hidden) of the half-width student."""
    return tuple(max(1, c // 2) for c in channels)


def model_channels(model: recipe.FashionCNN) -> tuple:
    return (model.features[0].out_channels, model.features[4].out_channels, model.classifier[1].out_features)


# ------------------------------------------------------------------ the baseline
def load_checkpoint(path) -> recipe.FashionCNN:
    """The FashionCNN of a recipe checkpoint (a file, or the newest in a directory)."""
    from ember.serve.flagship import architecture, load_model_state
    state, _ = load_model_state(str(path))
    model = recipe.FashionCNN(*architecture(state))
    model.load_state_dict(state)
    return model.eval()


def has_checkpoint(path) -> bool:
    p = Path(path)
    return p.is_file() or (p.is_dir() and any(p.glob("*.safetensors")))


def train_baseline(d: Data, epochs: int, channels: tuple, subset: int | None, seed: int = 0,
                   jit: bool = True) -> tuple:
    """(model, seconds): the recipe's `train` (its checkpoints go to a temporary folder), reloaded."""
    with tempfile.TemporaryDirectory(prefix="ember-compress-") as out:
        cfg = recipe.Config(epochs=epochs, seed=seed, data=d.folder, out=out, keep=1, progress=False,
                            limit_train=subset, jit=jit, channels=tuple(channels))
        res = recipe.train(cfg)
        return load_checkpoint(res["checkpoint"]), res["train_seconds"]


# ------------------------------------------------------------------ the table
@dataclass
class Row:
    name: str
    accuracy: float
    target: str = ""          # e.g. "<= 1.0"; "" for none
    max_loss: float | None = None  # points
    note: str = ""
    seconds: float = 0.0
    met: bool | None = None


@dataclass
class Result:
    rows: list = field(default_factory=list)
    sparsity: str = ""
    kd_tried: list = field(default_factory=list)
    seconds: float = 0.0

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)


def _delta(acc: float, base: float) -> float:
    return 100.0 * (acc - base)


def format_table(res: Result) -> str:
    base = res.rows[0].accuracy
    lines = [f"| {'model':<48} | {'test acc':>8} | {'vs fp32':>8} | {'target':>14} | {'met':>4} | {'time':>6} |",
             f"|{'-' * 50}|{'-' * 9}:|{'-' * 9}:|{'-' * 15}:|{'-' * 5}:|{'-' * 7}:|"]
    for r in res.rows:
        met = "" if r.met is None else ("yes" if r.met else "NO")
        lines.append(f"| {r.name:<48} | {100 * r.accuracy:7.2f}% | {_delta(r.accuracy, base):+8.2f} | "
                     f"{r.target:>14} | {met:>4} | {r.seconds:5.0f}s |")
    notes = [f"- {r.name}: {r.note}" for r in res.rows if r.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def run(args) -> Result:
    """Every row of the table (see the module docstring); `args` from `parse_args`."""
    t_all = time.perf_counter()
    res = Result()
    evaluate = recipe.evaluate
    d = load_data(args.data, args.subset, args.test_subset)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.verbose else (lambda *a: None)
    jit = not args.no_jit

    def add(name, acc, seconds, max_loss=None, target="", note="", beats=None):
        r = Row(name, acc, target, max_loss, note, seconds)
        if max_loss is not None:
            r.met = _delta(acc, base) >= -max_loss - 1e-9
        if beats is not None:
            r.met = acc > beats
        res.rows.append(r)
        say(f"{name}: {100 * acc:.2f}% ({seconds:.0f} s)")
        return r

    # 1. baseline
    t0 = time.perf_counter()
    ckpt = args.checkpoint
    if ckpt and not args.retrain and has_checkpoint(ckpt):
        teacher = load_checkpoint(ckpt)
        how = f"checkpoint {ckpt}"
    else:
        teacher, _ = train_baseline(d, args.epochs, args.channels, args.subset, args.seed, jit)
        how = f"trained {args.epochs} epoch(s) by ember.recipes.fashion_mnist.train"
    base = evaluate(teacher, d.x_test, d.y_test)
    add("fp32 baseline", base, time.perf_counter() - t0, note=f"FashionCNN{model_channels(teacher)}, {how}")
    calib = calibration_loader(d, args.calibration, seed=args.seed)

    # 2. weight-only int8
    t0 = time.perf_counter()
    acc = evaluate(qdq.quantize_weight_only(teacher), d.x_test, d.y_test)
    add("weight-only int8 (per-channel)", acc, time.perf_counter() - t0, 1.0, "<= 1.0 pt loss")
    t0 = time.perf_counter()
    m = qdq.fuse_conv_bn(copy.deepcopy(teacher).eval())
    correction.correct_bias(m, calib)
    acc = evaluate(qdq.quantize_weight_only(m), d.x_test, d.y_test)
    add("weight-only int8 + bias correction", acc, time.perf_counter() - t0, 1.0, "<= 1.0 pt loss")

    # 3. static int8
    ncal = sum(len(b[1]) for b in calib)
    for rr in (False, True):
        t0 = time.perf_counter()
        acc = evaluate(qdq.quantize_static(teacher, calib, reduce_range=rr), d.x_test, d.y_test)
        add(f"static int8, reduce_range={rr}", acc, time.perf_counter() - t0, 1.0, "<= 1.0 pt loss",
            note=f"min-max observers over {ncal} training images; BN folded; input quantized" if not rr else "")
    t0 = time.perf_counter()
    m = qdq.fuse_conv_bn(copy.deepcopy(teacher).eval())
    correction.correct_bias(m, calib)
    acc = evaluate(qdq.quantize_static(m, calib), d.x_test, d.y_test)
    add("static int8 + bias correction (rr=False)", acc, time.perf_counter() - t0, 1.0, "<= 1.0 pt loss",
        note="correct_bias on the BN-folded model, then quantize_static (correct_bias has no reduce_range)")

    # 4. QAT
    t0 = time.perf_counter()
    q = qat.prepare_qat(teacher)
    steps = fit(q, ce_loss(q), d, args.qat_epochs, args.qat_lr, seed=args.seed + 1, jit=jit,
                eager_steps=args.qat_observe_steps, after_eager=lambda: q.apply(qat.disable_observer))
    c = qat.convert(q.eval())
    acc = evaluate(c, d.x_test, d.y_test)
    add("QAT int8 (prepare_qat, 1 ep fine-tune, convert)" if args.qat_epochs == 1 else
        f"QAT int8 ({args.qat_epochs} ep fine-tune)", acc, time.perf_counter() - t0, 0.5, "<= 0.5 pt loss",
        note=f"{steps} AdamW steps at lr {args.qat_lr:g} (cosine), observers frozen after "
             f"{min(steps, args.qat_observe_steps)} eager steps; input not quantized")

    # 5. pruning
    t0 = time.perf_counter()
    pm = copy.deepcopy(teacher)
    pairs = [(mod, "weight") for mod in pm.modules() if type(mod) in (nn.Conv2d, nn.Linear)]
    n_batches = max(1, len(d.y_train) // 128)
    total = max(2, args.finetune_epochs * n_batches)
    end = max(1, int(total * args.prune_ramp))
    sched = prune.PruningSchedule(final_sparsity=args.sparsity, begin_step=0, end_step=end,
                                  frequency=max(1, end // 10))
    fit(pm, ce_loss(pm), d, args.finetune_epochs, args.finetune_lr, seed=args.seed + 2, jit=jit,
        before_step=lambda t: sched.step(t, pairs))
    sched.step(end, pairs)  # a run shorter than the ramp still ends at the final sparsity
    acc_masked = evaluate(pm, d.x_test, d.y_test)
    for mod, name in pairs:
        prune.remove(mod, name)
    acc = evaluate(pm, d.x_test, d.y_test)
    assert abs(acc - acc_masked) < 1e-9, (acc, acc_masked)
    rep = prune.sparsity(pm)
    pruned = {f"{n}.weight" for n, mod in pm.named_modules() if type(mod) in (nn.Conv2d, nn.Linear)}
    rep = prune.SparsityReport({k: v for k, v in rep.layers.items() if k in pruned})
    res.sparsity = str(rep)
    add(f"{args.sparsity:.0%} global magnitude pruning + fine-tune", acc, time.perf_counter() - t0, 1.0,
        "<= 1.0 pt loss", note=f"{args.finetune_epochs} ep at lr {args.finetune_lr:g} (cosine); "
        f"PolynomialDecay ramp 0 -> {args.sparsity:.0%} over steps 0..{end} every {sched.frequency}; "
        f"global sparsity of conv/linear weights {rep.global_sparsity:.2%}")

    # 6. distillation
    t0 = time.perf_counter()
    if args.kd_teacher_epochs:
        kd_teacher, _ = train_baseline(d, args.kd_teacher_epochs, model_channels(teacher), args.subset,
                                       args.seed, jit)
        add(f"teacher FashionCNN{model_channels(kd_teacher)}, {args.kd_teacher_epochs} ep",
            evaluate(kd_teacher, d.x_test, d.y_test), time.perf_counter() - t0,
            note=f"the distillation teacher: the baseline's recipe and seed, {args.kd_teacher_epochs} epochs")
    else:
        kd_teacher = teacher
    sc = half_width(model_channels(teacher))
    s_epochs = args.student_epochs or args.epochs
    seeds = [args.seed + 3 + k for k in range(args.kd_seeds)]

    def student_accuracy(seed: int, kd=None) -> float:
        """A half-width student from seed `seed` (initial weights, dropout and data order), trained
        alone (kd None) or distilled with KDLoss(*kd) from the teacher; its test accuracy."""
        ember.manual_seed(seed)
        student = recipe.FashionCNN(*sc)
        if kd is None:
            fit(student, ce_loss(student), d, s_epochs, recipe.Config.lr, seed=seed, jit=jit)
        else:
            hints = [distill.Hint(layer, layer, weight=w) for layer, w in args.kd_hint]
            dist = distill.Distiller(student, kd_teacher, distill.KDLoss(*kd), hints=hints,
                                     example_input=d.x_train[:2] if hints else None)
            fit(dist, dist, d, s_epochs, recipe.Config.lr, seed=seed, jit=jit, params=dist.parameters())
            dist.remove_hooks()
        return evaluate(student, d.x_test, d.y_test)

    def per_seed(accs) -> str:
        return "" if len(accs) == 1 else " (seeds: " + ", ".join(f"{100 * a:.2f}" for a in accs) + ")"

    t0 = time.perf_counter()
    alone = [student_accuracy(s) for s in seeds]
    acc_alone = float(np.mean(alone))
    what = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean over seeds {seeds[0]}..{seeds[-1]}"
    add(f"student FashionCNN{sc} alone", acc_alone, time.perf_counter() - t0,
        note=f"{s_epochs} ep at the recipe's lr {recipe.Config.lr:g}; {what}, the same for every student"
             f"{per_seed(alone)}")
    for temp, alpha in args.kd:
        t0 = time.perf_counter()
        accs = [student_accuracy(s, (temp, alpha)) for s in seeds]
        acc_kd = float(np.mean(accs))
        res.kd_tried.append((temp, alpha, acc_kd))
        hinted = "".join(f" + hint {layer}" for layer, _ in args.kd_hint)
        r = add(f"student distilled, KDLoss(T={temp:g}, alpha={alpha:g}){hinted}", acc_kd,
                time.perf_counter() - t0, target="> alone", beats=acc_alone)
        r.note = f"{_delta(acc_kd, acc_alone):+.2f} pt vs alone{per_seed(accs)}"
    teacher.requires_grad_(True)
    kd_teacher.requires_grad_(True)
    res.seconds = time.perf_counter() - t_all
    return res


def _channels(s: str) -> tuple:
    v = tuple(int(c) for c in s.split(","))
    if len(v) != 3 or min(v) < 1:
        raise argparse.ArgumentTypeError("--channels takes c1,c2,hidden (three positive ints)")
    return v


def _kd(s: str) -> tuple:
    t, a = s.split(":")
    return float(t), float(a)


def _hints(s: str) -> list:
    """--kd-hint: "none", or LAYER[:WEIGHT][,LAYER[:WEIGHT]...] (a submodule name of FashionCNN)."""
    if s.strip().lower() in ("", "none"):
        return []
    out = []
    for part in s.split(","):
        layer, _, w = part.strip().partition(":")
        try:
            out.append((layer, float(w) if w else 1.0))
        except ValueError:
            raise argparse.ArgumentTypeError(f"--kd-hint takes LAYER[:WEIGHT], got {part!r}") from None
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    d = recipe.Config()
    ap.add_argument("--data", default=None, help="folder with the Fashion-MNIST IDX files (default: "
                    "../shared/data/fashion-mnist if present, else ember.datasets' search)")
    ap.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                    help="a recipe checkpoint (file or folder) to use as the baseline if it exists "
                         f"(default {DEFAULT_CHECKPOINT}); otherwise the baseline is trained")
    ap.add_argument("--retrain", action="store_true", help="train the baseline even if --checkpoint exists")
    ap.add_argument("--epochs", type=int, default=d.epochs, help="baseline epochs (and the students')")
    ap.add_argument("--student-epochs", type=int, default=None, help="default: --epochs")
    ap.add_argument("--finetune-epochs", type=int, default=2, help="pruning fine-tune epochs")
    ap.add_argument("--finetune-lr", type=float, default=1e-3)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--prune-ramp", type=float, default=0.5,
                    help="fraction of the fine-tuning over which the sparsity ramps up")
    ap.add_argument("--qat-epochs", type=int, default=1)
    ap.add_argument("--qat-lr", type=float, default=1e-4)
    ap.add_argument("--qat-observe-steps", type=int, default=50,
                    help="eager QAT steps with observers on before they are frozen and the step jitted")
    ap.add_argument("--calibration", type=int, default=1000, help="calibration images for static int8")
    ap.add_argument("--kd", type=_kd, action="append", default=None, metavar="T:ALPHA",
                    help="a distillation setting (repeatable; default " + ", ".join(
                        f"{t:g}:{a:g}" for t, a in DEFAULT_KD) + ")")
    ap.add_argument("--kd-seeds", type=int, default=3,
                    help="train every student from this many seeds and report the mean (default 3)")
    ap.add_argument("--kd-hint", type=_hints, default=_hints(DEFAULT_KD_HINT), metavar="LAYER[:WEIGHT]",
                    help="FitNet hints added to every distilled student: the student's LAYER regressed (1x1 "
                         "conv) onto the teacher's, MSE times WEIGHT; comma-separated, or none (default "
                         f"{DEFAULT_KD_HINT})")
    ap.add_argument("--kd-teacher-epochs", type=int, default=10,
                    help="epochs of the distillation teacher, trained as the baseline is (default 10); "
                         "0: the baseline is the teacher")
    ap.add_argument("--subset", type=int, default=None, help="train on the first N training images")
    ap.add_argument("--test-subset", type=int, default=None, help="evaluate on the first N test images")
    ap.add_argument("--channels", type=_channels, default=(*d.channels, 128),
                    help="c1,c2,hidden of the baseline when it is trained (default 16,32,128)")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--no-jit", action="store_true", help="run every training step eagerly")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for BLAS and ember's native kernels (default: ember's, $OMP_NUM_THREADS)")
    ap.add_argument("-q", "--quiet", dest="verbose", action="store_false", help="no progress on stderr")
    a = ap.parse_args(argv)
    if a.kd is None:
        a.kd = list(DEFAULT_KD)
    return a


def main(argv=None) -> Result:
    args = parse_args(argv)
    if args.threads:
        ember.set_num_threads(args.threads)
    t0 = time.perf_counter()
    res = run(args)
    print(format_table(res))
    print("\nsparsity of the pruned model (conv / linear weights):")
    print(res.sparsity)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; train images {args.subset or 60000}, "
          f"test images {args.test_subset or 10000}")
    return res


if __name__ == "__main__":
    main()
