"""Which built-in recipes export to NIR, and which NIR peers run the export exactly (issue #16).

For every recipe in ``fewstep/recipes`` (``fewstep recipes`` lists them) the script builds the
recipe's model untrained (seeded, ``T = 2``), sets its BatchNorm statistics and scales its
``Linear`` weights so that every spiking layer fires (:func:`stimulate`; untrained nets hardly
fire past the first layer, which would make any comparison trivial), and

1. exports it with :func:`fewstep.nir_io.export_nir` (or records the refusal's reason);
2. runs the graph in :func:`fewstep.nir_io.euler_reference` (a textbook forward-Euler NIR
   reader on nirtorch) and in each peer's NIR importer: snnTorch ``import_from_nir``, Norse
   ``from_nir``, SpikingJelly ``import_from_nir``, on one random input (batch 2, ``T = 2``; a
   static image fed at both steps, or a 2-step current sequence for event recipes);
3. compares the output (the classifier's logits at every step, ``[T, B, classes]``) with
   fewstep's own forward pass: **exact** means bitwise equal (same spikes in every layer, then
   the same float32 classifier).

A peer that differs on the default graph is tried again on ``export_nir(..., gain="weights")``
(``r = 1``, the input gain folded into the weights: the same network, the form Norse 1.1, which
ignores ``r``, runs). Each row's input shape is the dataset's (no data is read).

Run: ``python benchmarks/nir_matrix.py [--recipes quickstart mnist-lif-t2 ...] [--out FILE.md]``
(prints the Markdown table; ``--out`` also writes it). About 2 minutes for all recipes on two
CPU cores. Peers that are not installed are reported as such.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fewstep.atomic import write_text_atomic  # noqa: E402
from fewstep.config import builtin_recipes, load_recipe  # noqa: E402
from fewstep.models import build_model  # noqa: E402
from fewstep.neurons import spiking_neurons  # noqa: E402
from fewstep.nir_io import NIRError, euler_reference, export_nir  # noqa: E402

TIMESTEPS = 2
BATCH = 2

#: One step's input shape and class count of each static-image dataset.
STATIC = {"cifar10": ((3, 32, 32), 10), "cifar10-jpeg": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100),
          "digits": ((1, 8, 8), 10), "mnist": ((1, 28, 28), 10), "fashion-mnist": ((1, 28, 28), 10),
          "tinyimagenet": ((3, 64, 64), 200)}
#: Sensor side and class count of each event dataset (STC currents: 2 polarities).
EVENTS = {"nmnist": (34, 10), "saccade-digits": (34, 10), "saccade-mnist": (34, 10), "cifar10dvs": (128, 10),
          "dvsgesture": (128, 11)}

PEERS = ("snntorch", "norse", "spikingjelly")


def input_shape(recipe) -> tuple[tuple[int, ...], int, bool]:
    """``(one step's shape, classes, static)`` of a recipe's dataset, from its options."""
    d, o = recipe.data.dataset, recipe.data.options
    if d in STATIC:
        return (*STATIC[d], True)
    side, classes = EVENTS[d]
    size = o.get("size", 0) or side // int(o.get("spatial_factor", 1))
    return (2, size, size), classes, False


def stimulate(model: nn.Module, seed: int = 0) -> nn.Module:
    """BN statistics and ``Linear`` weights that make every layer of an untrained model fire (and,
    in a model without BN, e.g. a converted SNN, conv weights doubled)."""
    gen = torch.Generator().manual_seed(seed)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(c, generator=gen) * 1.5 + 1.0)
                m.bias.copy_(torch.rand(c, generator=gen) * 0.6 + 0.2)
            if isinstance(m, nn.Linear):
                m.weight.mul_(3)
            if isinstance(m, nn.Conv2d) and not has_bn:
                m.weight.mul_(2)
    return model.eval()


def build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The recipe's model (untrained, stimulated), fewstep's input and the peers' ``[T, B, ...]`` input."""
    recipe = load_recipe(name)
    shape, classes, static = input_shape(recipe)
    torch.manual_seed(seed)
    model = build_model(recipe.model.name, num_classes=classes, input_shape=shape, timesteps=TIMESTEPS,
                        neuron=recipe.neuron, **recipe.model.options)
    stimulate(model, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    if static:
        x = torch.rand(BATCH, *shape, generator=gen) * 2
        return model, x, x.unsqueeze(0).expand(TIMESTEPS, *x.shape)
    seq = torch.rand(TIMESTEPS, BATCH, *shape, generator=gen) * 2
    return model, seq, seq


# ------------------------------------------------------------------------------- peers


def _step(module, seq: torch.Tensor, *, pass_state: bool) -> torch.Tensor:
    state, outs = None, []
    with torch.no_grad():
        for t in range(seq.shape[0]):
            out = module(seq[t], state) if pass_state else module(seq[t])
            if isinstance(out, tuple):
                out, state = out[0], out[1]
            outs.append(out)
    return torch.stack(outs)


def run_snntorch(graph, seq: torch.Tensor) -> torch.Tensor:
    """snnTorch 1.0: ``import_from_nir`` (its neurons keep their own state: ``init_hidden``)."""
    from snntorch.import_nir import import_from_nir

    with contextlib.redirect_stdout(io.StringIO()):  # it prints progress and warnings
        net = import_from_nir(graph)
    return _step(net, seq, pass_state=False)


def run_norse(graph, seq: torch.Tensor) -> torch.Tensor:
    """Norse 1.1: ``norse.torch.from_nir`` at the graph's ``dt`` (state passed back each step)."""
    import norse.torch as norse

    net = norse.from_nir(graph, dt=float(graph.metadata["dt"]))
    return _step(net, seq, pass_state=True)


def run_spikingjelly(graph, seq: torch.Tensor) -> torch.Tensor:
    """SpikingJelly 2.0: ``nir_exchange.import_from_nir`` at the graph's ``dt``, single-step."""
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    net = import_from_nir(graph, dt=float(graph.metadata["dt"]))
    return _step(net, seq, pass_state=True)


RUNNERS = {"snntorch": run_snntorch, "norse": run_norse, "spikingjelly": run_spikingjelly}
_MODULES = {"snntorch": "snntorch", "norse": "norse", "spikingjelly": "spikingjelly"}


def peer_installed(peer: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(_MODULES[peer]) is not None and importlib.util.find_spec("nirtorch") is not None


def _why_not(graph, exc: Exception) -> str:
    """A short reason a peer could not read a graph (the node type it has no mapping for)."""
    text = str(exc)
    if "Unknown node type" in text:  # nirtorch: "Unknown node type <class 'nir.ir.neuron.LI'>, ..."
        return "no " + text.split("'")[1].rsplit(".", 1)[-1] + " mapping"
    if isinstance(exc, KeyError) and exc.args and exc.args[0] in graph.nodes:  # Norse: an unmapped node
        return f"no {type(graph.nodes[exc.args[0]]).__name__} mapping"
    return f"{type(exc).__name__}: {text.splitlines()[0][:60] if text else ''}"


def short_reason(text: str) -> str:
    """The refusal's reason in a few words, for the table (the full message is export_nir's error)."""
    if "pools real values" in text:
        return "max pooling of real values (between BN and the neuron): NIR 1.0 has no max"
    if "ANN activation" in text:
        return "a DNN (clipped ReLU), not an SNN: NIR has no ReLU; convert it, then export the SNN"
    if "residual block" in text:
        return "residual blocks: NIR can express them, fewstep's exporter does not write them yet"
    return text if len(text) <= 100 else text[:97] + "..."


def min_margin(neurons) -> float:
    """How close any recorded membrane came to any of its thresholds ``k V_th`` (ties are where
    fewstep's ``h >= V`` and NIR's ``v > V``, or two float roundings, can disagree)."""
    best = float("inf")
    for n in neurons:
        h = n.last_membrane
        if h is None:
            continue
        v = float(n.threshold.detach())
        for k in range(1, int(n.num_thresholds) + 1):
            best = min(best, float((h - k * v).abs().min()))
    return best


def _differs(diff: float, margin: float) -> str:
    text = f"differs (max diff {diff:.2g})"
    if margin < 1e-5:
        text = (f"differs by float rounding (max diff {diff:.2g}: a membrane came within {margin:.1g} of a "
                "threshold, and the reader adds the same terms in another order)")
    return text


def peer_verdict(peer: str, graphs: dict, seq: torch.Tensor, ours: torch.Tensor, margin: float = 1.0) -> str:
    """``exact``, ``exact with gain="weights"``, ``differs (...)`` or ``no: <reason>``."""
    if not peer_installed(peer):
        return "not installed"
    first = None
    for gain, graph in graphs.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theirs = RUNNERS[peer](graph, seq)
        except Exception as exc:  # noqa: BLE001 (a peer's failure is the measurement)
            first = first or f"no: {_why_not(graph, exc)}"
            continue
        if theirs.shape == ours.shape and torch.equal(theirs, ours):
            return "exact" if gain == "r" else 'exact with `gain="weights"`'
        diff = float((theirs - ours).abs().max()) if theirs.shape == ours.shape else float("nan")
        first = first or _differs(diff, margin)
    return first or "?"


# ------------------------------------------------------------------------------- one recipe


def check_recipe(name: str, peers=PEERS, seed: int = 0) -> dict:
    """One row of the matrix (see the module docstring)."""
    model, x, seq = build(name, seed)
    row = {"recipe": name, "model": load_recipe(name).model.name}
    try:
        graphs = {"r": export_nir(model), "weights": export_nir(model, gain="weights")}
    except NIRError as exc:
        row.update(exports=False, reason=short_reason(str(exc).split(": ", 1)[-1]))
        return row
    neurons = [n for _, n in spiking_neurons(model)]
    for n in neurons:
        n.record = True
    with torch.no_grad():
        ours = model(x)
    rates = [float((n.last_spikes != 0).float().mean()) for n in neurons]
    margin = min_margin(neurons)
    for n in neurons:
        n.record = False
        n.last_spikes = n.last_membrane = None
    row.update(exports=True, reason="", nodes=len(graphs["r"].nodes), min_rate=min(rates) if rates else 0.0,
               margin=margin)
    ref = euler_reference(graphs["r"])(x)
    row["reference"] = "exact" if torch.equal(ref, ours) else _differs(float((ref - ours).abs().max()), margin)
    for peer in peers:
        row[peer] = peer_verdict(peer, graphs, seq, ours, margin)
    return row


def markdown(rows: list[dict], peers=PEERS) -> str:
    names = {"snntorch": "snnTorch", "norse": "Norse", "spikingjelly": "SpikingJelly"}
    head = ("| recipe | model | exports | reason if not | least-firing layer | NIR reference | "
            + " | ".join(names[p] for p in peers) + " |")
    lines = [head, "|" + "---|" * (6 + len(peers))]
    for r in rows:
        if r["exports"]:
            cells = [r["recipe"], r["model"], f"yes ({r['nodes']} nodes)", "", f"{r['min_rate']:.1%}", r["reference"]]
            cells += [r[p] for p in peers]
        else:
            cells = [r["recipe"], r["model"], "no", r["reason"].replace("|", "/"), "", "", *[""] * len(peers)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", nargs="*", default=None, help="recipe names (default: all built-in recipes)")
    ap.add_argument("--peers", nargs="*", default=list(PEERS), choices=PEERS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)  # the peers' importers log a warning per node
    names = args.recipes or sorted(builtin_recipes())
    rows, start = [], time.perf_counter()
    for name in names:
        rows.append(check_recipe(name, tuple(args.peers), args.seed))
        print(f"{name}: {'exports' if rows[-1]['exports'] else 'refused'} ({time.perf_counter() - start:.0f} s)",
              file=sys.stderr)
    table = markdown(rows, tuple(args.peers))
    print(table, end="")
    if args.out is not None:
        write_text_atomic(args.out, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
