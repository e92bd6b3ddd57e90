"""`spava generate` and `spava eval`: a (torchrun) process with a video LMM of a supported family
(``integrations/families.py``)."""

from __future__ import annotations

import os
import sys
import time
from typing import Optional

import torch

__all__ = ["cmd_generate", "cmd_eval"]


class _FirstTokenClock:
    """A generate() streamer that notes when the first new token arrives (dense baseline)."""

    def __init__(self):
        self.calls, self.first = 0, None

    def put(self, value):
        self.calls += 1
        if self.calls == 2 and self.first is None:  # call 1 is the prompt
            self.first = time.perf_counter()

    def end(self):
        pass


def _import_group_default_modules() -> None:
    """Import, before the process group exists, the torch modules whose functions take
    ``group=group.WORLD`` as a default argument (evaluated at import). Imported later (transformers
    imports torch.distributed.nn while loading a model) they would hold the default group, so
    ``destroy_process_group()`` could not free it: its gloo threads would outlive ``close()`` into
    interpreter shutdown, where one still releasing a finished collective's tensor needs the GIL,
    is made to exit, and aborts the process ("terminate called without an active exception")."""
    import torch.distributed.fsdp.sharded_grad_scaler  # noqa: F401
    import torch.distributed.nn  # noqa: F401
    import torch.distributed.optim  # noqa: F401


class _Session:
    """One process of a (torchrun) job: device, process group, model, processor."""

    def __init__(self, model_dir: str, family):
        import torch.distributed as dist
        import transformers

        from . import comm, envs

        self.family = family
        self.world, self.rank = envs.world_size(), envs.rank()
        cuda = torch.cuda.is_available()
        self.device = torch.device("cuda", envs.local_rank()) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            _import_group_default_modules()
            dist.init_process_group("nccl" if cuda else "gloo",
                                    device_id=self.device if cuda else None,
                                    pg_options=comm.nccl_options() if cuda else None)
        self.model = transformers.AutoModelForImageTextToText.from_pretrained(
            model_dir, dtype=torch.bfloat16 if cuda else torch.float32, local_files_only=True)
        self.model = self.model.to(self.device).eval()
        self.processor = transformers.AutoProcessor.from_pretrained(model_dir,
                                                                    local_files_only=True)

    def say(self, *args, **kwargs):
        if self.rank == 0:
            print(*args, **kwargs)

    def close(self):
        import torch.distributed as dist

        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def inputs(self, video: str, question: str, fps: float, max_frames: int):
        from .video import read_video

        frames, used_fps = read_video(video, fps, max_frames)
        messages = [{"role": "user", "content": [{"type": "video"},
                                                 {"type": "text", "text": question}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True,
                                                  tokenize=False)
        inputs = self.processor(text=[text], videos=[frames], return_tensors="pt",
                                **self.family.video_kwargs(len(frames), used_fps))
        return inputs.to(self.device), len(frames), used_fps

    def answer(self, inputs, args, progress: bool = False) -> tuple[Optional[str], dict]:
        """The decoded answer (None on ranks > 0 with dense attention) and timings."""
        from .integrations.transformers import generate

        timings: dict = {}
        if args.attention == "spava":
            passing = None if args.passing_len == "exact" else (
                "auto" if args.passing_len == "auto" else int(args.passing_len))
            anchor = "auto" if args.anchor_len == "auto" else int(args.anchor_len)
            bars = {}
            if progress and self.rank == 0:
                from tqdm import tqdm
                layers = self.model.config.get_text_config().num_hidden_layers
                bars["prefill"] = tqdm(total=layers, desc="prefill", unit="layer", leave=False)
                bars["decode"] = tqdm(total=args.max_new_tokens, desc="decode", unit="tok",
                                      leave=False)
            ids = generate(self.model, dict(inputs), max_new_tokens=args.max_new_tokens,
                           passing_len=passing, anchor_len=anchor,
                           shard_anchor=None if args.anchor == "auto" else (
                               args.anchor == "sharded"),
                           timings=timings, attn_dtype=args.attn_dtype, hadamard=args.hadamard,
                           on_token=(lambda s, t: bars["decode"].update(1)) if bars else None,
                           on_layer=(lambda i: bars["prefill"].update(1)) if bars else None)
            for bar in bars.values():
                bar.close()
        else:  # dense: the model's own generate on rank 0, the reference for a comparison
            if self.rank != 0:
                return None, timings
            clock = _FirstTokenClock()
            start = time.perf_counter()
            with torch.no_grad():
                out = self.model.generate(**inputs, max_new_tokens=args.max_new_tokens,
                                          do_sample=False, streamer=clock)
            end = time.perf_counter()
            ids = out[:, inputs["input_ids"].shape[1]:]
            first = clock.first or end
            timings = {"first_token": first - start, "decode": end - first,
                       "decode_tokens": max(0, ids.shape[1] - 1)}
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0], timings


def _check_paths(cmd: str, paths) -> bool:
    for what, path, ok in paths:
        if not ok:
            print(f"spava {cmd}: {what} '{path}' not found (local files only, no downloads)",
                  file=sys.stderr)
            return False
    return True


def _family(cmd: str, model_dir: str):
    """The checkpoint's model family, or None after printing why it is not supported."""
    from .integrations.families import video_family_of_dir

    try:
        return video_family_of_dir(model_dir, f"spava {cmd}")
    except ValueError as e:
        print(e, file=sys.stderr)
        return None


def cmd_generate(args) -> int:
    if not _check_paths("generate", [("model directory", args.model, os.path.isdir(args.model)),
                                     ("video file", args.video, os.path.isfile(args.video))]):
        return 2
    family = _family("generate", args.model)
    if family is None:
        return 2
    t0 = time.perf_counter()
    ses = _Session(args.model, family)
    try:
        inputs, n_frames, fps = ses.inputs(args.video, args.question, args.fps, args.max_frames)
        ses.say(f"spava generate: {n_frames} frames at {fps:.2f} fps -> "
                f"{inputs['input_ids'].shape[1]} prompt tokens; attention {args.attention}, "
                f"{ses.world} rank(s); loading took {time.perf_counter() - t0:.1f}s", flush=True)
        answer, timings = ses.answer(inputs, args, progress=True)
        if answer is None:
            return 0
        ses.say(f"answer: {answer}")
        parts = [f"{k} {timings[k]:.3f}s" for k in ("vision+embed", "prefill", "first_token",
                                                      "decode") if k in timings]
        if timings.get("decode_tokens"):
            parts.append(f"{timings['decode_tokens'] / max(timings['decode'], 1e-9):.1f} tokens/s")
        ses.say("timing: " + ", ".join(parts))
        if "layout" in timings:
            ses.say(f"layout: {timings['layout']}")
        return 0
    finally:
        ses.close()


def cmd_eval(args) -> int:
    import json

    from . import evaluation

    if not _check_paths("eval", [("model directory", args.model, os.path.isdir(args.model)),
                                 ("dataset directory", args.data, os.path.isdir(args.data))]):
        return 2
    items = (evaluation.load_longvideobench(args.data, args.annotations or "lvb_val.json")
             if args.bench == "longvideobench" else
             evaluation.load_vnbench(args.data, args.annotations or "VNBench-main-4try.json"))
    items = items[: args.limit] if args.limit else items
    family = _family("eval", args.model)
    if family is None:
        return 2
    ses = _Session(args.model, family)
    try:
        def answer(item):
            inputs, _, _ = ses.inputs(item.video, item.prompt, args.fps, args.max_frames)
            text, _ = ses.answer(inputs, args)
            return text or ""

        out = args.out or f"{args.bench}_{args.attention}_results.jsonl"
        if ses.rank != 0:  # the other ranks only take part in the Spava runs
            out = os.devnull
        records = evaluation.run_benchmark(
            items, answer, out, on_item=lambda i, r: ses.say(
                f"[{i + 1}/{len(items)}] {r['id']}: {r['pred']} (answer {r['answer']})",
                flush=True))
        if ses.rank == 0:
            result = evaluation.score(records, args.bench)
            print(json.dumps(result, indent=1))
            print(f"wrote {out}")
        return 0
    finally:
        ses.close()


