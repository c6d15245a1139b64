"""Training loop for epsilon-networks: AdamW/Adam, EMA, gradient clipping, exact-resume checkpoints,
periodic metrics and data-parallel training with torch.distributed.

Loss (DDPM "simple" loss, plus the moment heads when the model has them):
  t ~ schedule.sample_t, eps ~ N(0, I), x_t = a_t x0 + sigma_t eps,
  L = mean |h_eps(x_t, t) - eps|^2 + sum_{n in heads, n >= 2} w_n mean |h_{eps^n}(x_t, t) - eps^n|^2.

Every random quantity of a step (batch indices, times, noise) is drawn from one CPU ``torch.Generator``
for the *global* batch; under DDP each rank keeps its slice of it. So a run on W processes with global
batch B computes the same gradient as one process with batch B (up to float summation order), and a
checkpoint (model, EMA, optimizer, generator and torch RNG states, step) resumes bit-identically.

Data parallel: launch with ``torchrun --nproc_per_node W ...``; :func:`init_distributed` reads the
torchrun environment and uses gloo on CPU and nccl on CUDA.
"""
from __future__ import annotations

import copy
import json
import os
import pickle
import time
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .. import _validate as V
from .oracle import heads_dict
from .schedules import Schedule, schedule_from_spec

OPTIMIZERS = ("adamw", "adam")


@dataclass
class TrainConfig:
    steps: int = 2000              # total optimizer steps
    batch_size: int = 256          # global batch (divided over the DDP ranks)
    lr: float = 2e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"       # 'adamw' | 'adam'
    beta1: float = 0.9
    beta2: float = 0.999
    warmup: int = 0                # linear learning-rate warm-up steps
    ema_decay: float = 0.999       # max EMA decay (warmed up as min(decay, (1+n)/(10+n))); 0: EMA = model
    grad_clip: Optional[float] = 1.0  # max global grad norm; None or 0 disables
    head_weights: Dict[str, float] = field(default_factory=lambda: {"eps2": 1.0, "eps3": 1.0})
    conditional: bool = False      # feed the dataset labels as cond
    seed: int = 0
    log_every: int = 100
    eval_every: int = 0            # 0: no periodic metrics
    ckpt_every: int = 0            # 0: checkpoint only at the end (when out_dir is set)
    progress: bool = True

    def validate(self) -> "TrainConfig":
        """Check every field; raises ValueError / TypeError naming it. Returns self."""
        fn = "TrainConfig"
        for name in ("steps", "log_every", "eval_every", "ckpt_every", "warmup"):
            V.integer(fn, name, getattr(self, name), lo=0)
        V.integer(fn, "batch_size", self.batch_size, lo=1)
        V.seed(fn, "seed", self.seed)
        V.number(fn, "lr", self.lr, lo=0.0, lo_open=True)
        V.number(fn, "weight_decay", self.weight_decay, lo=0.0)
        V.choice(fn, "optimizer", self.optimizer, OPTIMIZERS)
        for name in ("beta1", "beta2", "ema_decay"):
            V.number(fn, name, getattr(self, name), lo=0.0, hi=1.0, hi_open=True)
        if self.grad_clip is not None:
            V.number(fn, "grad_clip", self.grad_clip, lo=0.0, what="None or a finite number >= 0 (0: off)")
        if not isinstance(self.head_weights, dict):
            raise TypeError(f"{fn}: argument 'head_weights' must be a dict of head name -> weight, got "
                            f"{type(self.head_weights).__name__}")
        for name, w in self.head_weights.items():
            V.choice(fn, "head_weights", name, ("eps2", "eps3"))
            V.number(fn, "head_weights", w, lo=0.0, what=f"a dict of finite weights >= 0 (entry {name!r})")
        V.flag(fn, "conditional", self.conditional)
        V.flag(fn, "progress", self.progress)
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown keys {unknown}; known: {sorted(names)}")
        return cls(**d).validate()


# -- distributed ------------------------------------------------------------------------------------

def init_distributed(device: str = "cpu") -> tuple:
    """Initialise torch.distributed from the torchrun environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT).

    Returns (rank, world_size, device). Without WORLD_SIZE > 1 it does nothing and returns (0, 1, device).
    gloo on CPU, nccl on CUDA (each rank takes cuda:LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, torch.device(device)
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), dev


def _dist_on() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


# -- trainer ----------------------------------------------------------------------------------------

class Trainer:
    """Train ``model`` (an epsilon-network, see :mod:`.models`) on ``data`` [N, *data_shape].

    ``labels`` [N] are passed as ``cond`` when ``config.conditional``. ``eval_fn(trainer) -> dict`` runs
    every ``config.eval_every`` steps (rank 0); its output goes into ``history`` and
    ``out_dir/metrics.jsonl``. ``meta`` is stored in checkpoints (dataset name etc.).
    """

    def __init__(self, model: nn.Module, schedule: Schedule, data: Tensor, config: Optional[TrainConfig] = None, *,
                 labels: Optional[Tensor] = None, out_dir=None, device="cpu",
                 eval_fn: Optional[Callable[["Trainer"], dict]] = None, meta: Optional[dict] = None):
        fn = "Trainer"
        if not isinstance(model, nn.Module):
            raise TypeError(f"{fn}: argument 'model' must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(schedule, Schedule):
            raise TypeError(f"{fn}: argument 'schedule' must be a DiscreteSchedule or VPSDE, got "
                            f"{type(schedule).__name__}")
        if config is not None and not isinstance(config, TrainConfig):
            raise TypeError(f"{fn}: argument 'config' must be a TrainConfig or None, got {type(config).__name__}")
        self.config = (config or TrainConfig()).validate()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if _dist_on() else (0, 1)
        self.device = V.device(fn, "device", device) or torch.device("cpu")
        if self.config.batch_size % self.world:
            raise ValueError(f"{fn}: batch_size={self.config.batch_size} must be divisible by the number of "
                             f"processes ({self.world})")
        V.tensor(fn, "data", data)
        V.values(fn, "data", data)
        if data.dim() < 2 or data.shape[0] < 1:
            raise ValueError(f"{fn}: argument 'data' must have shape [N, *data_shape] with N >= 1, got "
                             f"{list(data.shape)}")
        V.finite(fn, "data", data)
        if labels is not None:
            V.tensor(fn, "labels", labels, floating=False)
            if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
                raise TypeError(f"{fn}: argument 'labels' must be an integer tensor, got {labels.dtype}")
            if tuple(labels.shape) != (data.shape[0],):
                raise ValueError(f"{fn}: argument 'labels' must have shape [N={data.shape[0]}], got "
                                 f"{list(labels.shape)}")
        if self.config.conditional and labels is None:
            raise ValueError(f"{fn}: argument 'labels' is None, but config.conditional=True needs labels")
        self.model = model.to(self.device)
        self.schedule = schedule
        self.data = data.float().to(self.device)
        self.labels = labels.to(self.device) if labels is not None else None
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.eval_fn = eval_fn
        self.meta = dict(meta or {})
        self.step = 0
        self.history: List[dict] = []
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.heads = tuple(getattr(model, "heads", ("eps",)))
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        c = self.config
        opt_cls = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(self.model.parameters(), lr=c.lr, betas=(c.beta1, c.beta2), weight_decay=c.weight_decay)
        if _dist_on():
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DDP(self.model, device_ids=ids)
        else:
            self.net = self.model
        self._loss_sum, self._loss_n = 0.0, 0

    # -- one step ---------------------------------------------------------------------------------
    def _batch(self):
        """Global batch from the trainer generator; returns this rank's slice (x0, t, eps, cond)."""
        B, g = self.config.batch_size, self.generator
        idx = torch.randint(self.data.shape[0], (B,), generator=g)
        t = self.schedule.sample_t(B, generator=g).float()
        eps = torch.randn((B, *self.data.shape[1:]), generator=g)
        b = B // self.world
        sl = slice(self.rank * b, (self.rank + 1) * b)
        idx, t, eps = idx[sl].to(self.device), t[sl].to(self.device), eps[sl].to(self.device)
        cond = self.labels[idx] if self.config.conditional else None
        return self.data[idx], t, eps, cond

    def alpha_sigma(self, t: Tensor, device) -> tuple:
        """a_t, sigma_t of the schedule at the sampled times t (computed in float64), as float32 vectors on device."""
        a, s = self.schedule.alpha_sigma(t.double().cpu())
        return a.float().to(device), s.float().to(device)

    def noised(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_t = a_t x0 + sigma_t eps, per sample."""
        a, s = self.alpha_sigma(t, x0.device)
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return a.view(shape) * x0 + s.view(shape) * eps

    def moment_head_loss(self, out: Dict[str, Tensor], eps: Tensor, names, loss: Optional[Tensor] = None) -> Optional[Tensor]:
        """``loss`` plus, for the moment heads eps2, eps3 named in ``names``, w_n mean |h_n - eps^n|^2, added in that
        order (None if both are absent and no ``loss`` is given)."""
        for name, power in (("eps2", 2), ("eps3", 3)):
            if name in names:
                term = float(self.config.head_weights.get(name, 1.0)) * (out[name] - eps.pow(power)).pow(2).mean()
                loss = term if loss is None else loss + term
        return loss

    def loss(self, x0: Tensor, t: Tensor, eps: Tensor, cond=None) -> Tensor:
        xt = self.noised(x0, t, eps)
        kw = {"cond": cond} if cond is not None else {}
        if len(self.heads) == 1:
            return (self.net(xt, t, **kw) - eps).pow(2).mean()
        out = heads_dict(self.net(xt, t, heads=True, **kw))
        return self.moment_head_loss(out, eps, out, loss=(out["eps"] - eps).pow(2).mean())

    def train_step(self) -> float:
        c = self.config
        self.model.train()
        lr = c.lr * min(1.0, (self.step + 1) / c.warmup) if c.warmup else c.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x0, t, eps, cond = self._batch()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(x0, t, eps, cond)
        loss.backward()
        if c.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.optimizer.step()
        self._update_ema()
        self.step += 1
        val = float(loss.detach())
        self._loss_sum += val
        self._loss_n += 1
        return val

    @torch.no_grad()
    def _update_ema(self):
        # warm-up of the decay, min(decay, (1 + n)/(10 + n)) after n updates, so that short runs are not
        # dominated by the initial weights
        d = min(self.config.ema_decay, (1.0 + self.step) / (10.0 + self.step))
        for pe, p in zip(self.ema.parameters(), self.model.parameters()):
            if d > 0:
                pe.lerp_(p.detach(), 1.0 - d)
            else:
                pe.copy_(p)
        for be, b in zip(self.ema.buffers(), self.model.buffers()):
            be.copy_(b)

    # -- loop -------------------------------------------------------------------------------------
    def train(self, steps: Optional[int] = None) -> List[dict]:
        """Run until ``steps`` (default ``config.steps``) total steps; returns the metrics history."""
        c = self.config
        target = c.steps if steps is None else steps
        bar = None
        if c.progress and self.rank == 0 and target > self.step:
            from tqdm.auto import tqdm

            bar = tqdm(total=target, initial=self.step, desc="train", dynamic_ncols=True)
        t0 = time.time()
        try:
            while self.step < target:
                loss = self.train_step()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                last = self.step == target
                if c.log_every and (self.step % c.log_every == 0 or last):
                    self._log({"step": self.step, "loss": self._mean_loss(), "time_s": round(time.time() - t0, 3)})
                if c.eval_every and self.eval_fn is not None and (self.step % c.eval_every == 0 or last):
                    if self.rank == 0:
                        self._log({"step": self.step, **self.eval_fn(self)})
                    if _dist_on():
                        dist.barrier()
                if self.out_dir is not None and ((c.ckpt_every and self.step % c.ckpt_every == 0) or last):
                    self.save(self.out_dir / "checkpoint.pt")
        finally:
            if bar is not None:
                bar.close()
        return self.history

    def _mean_loss(self) -> float:
        s = torch.tensor([self._loss_sum, float(self._loss_n)], dtype=torch.float64)
        if _dist_on():
            dist.all_reduce(s)
        self._loss_sum, self._loss_n = 0.0, 0
        return float(s[0] / s[1].clamp_min(1))

    def _log(self, rec: dict):
        if self.rank != 0:
            return
        self.history.append(rec)
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        rng = {"generator": self.generator.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available() and self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": "gmmkernels.diffusion/1",
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
            "train_config": asdict(self.config),
            "model_config": getattr(self.model, "config", None),
            "schedule": self.schedule.spec(),
            "meta": self.meta,
            "history": [{k: v for k, v in h.items() if k not in CLOCK_KEYS} for h in self.history],
        }

    def save(self, path) -> None:
        """Write a checkpoint (rank 0, atomically: a temporary file, flushed to disk, then renamed over ``path``, so a
        crash leaves the previous checkpoint intact); all ranks wait for it. A save that fails or is interrupted
        removes its temporary file; one left by a killed process is removed by the next save or load."""
        path = Path(path)
        if self.rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_path(path)
            try:
                with open(tmp, "wb") as f:
                    torch.save(self.state_dict(), f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        if _dist_on():
            dist.barrier()

    def load_state_dict(self, state: dict) -> None:
        check_checkpoint(state, TRAINER_KEYS, "Trainer")
        try:
            self.model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"Trainer: the checkpoint's weights do not fit this model and optimizer (another "
                             f"architecture, size, heads or data shape?): {_first_line(e)}") from None
        try:
            rng, step = state["rng"], int(state["step"])
            self.generator.set_state(rng["generator"])
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"Trainer: the checkpoint's step or random-number states are damaged: {_first_line(e)}") \
                from None
        self.step = step
        self.history = list(state.get("history", []))
        self._loss_sum, self._loss_n = 0.0, 0

    def load(self, path) -> None:
        """Resume from a checkpoint written by :meth:`save` (same model and optimizer layout). A file that is not
        such a checkpoint raises ValueError naming it and what is wrong; only tensors and plain containers are read
        (``weights_only``), so no pickled code runs."""
        path = Path(path)
        if self.rank == 0:
            remove_stale_temp(path)
        state = read_checkpoint(path, self.device)
        try:
            self.load_state_dict(state)
        except ValueError as e:
            raise ValueError(f"{path}: {str(e).removeprefix('Trainer: ')}") from None


# -- checkpoint files -------------------------------------------------------------------------------

FORMAT = "gmmkernels.diffusion/1"
CLOCK_KEYS = ("time_s",)  # wall-clock fields of the history: logged, not checkpointed (checkpoints are reproducible)
TRAINER_KEYS = ("step", "model", "ema", "optimizer", "rng")  # what resuming needs
MODEL_KEYS = ("model_config", "schedule", "ema", "model")  # what load_checkpoint needs


def temp_path(path: Path) -> Path:
    """The temporary file a save of ``path`` writes before renaming it."""
    return path.with_name(path.name + ".tmp")


def remove_stale_temp(path) -> None:
    """Remove the temporary file a killed save of ``path`` left behind (no live save of it may be running)."""
    temp_path(Path(path)).unlink(missing_ok=True)


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def check_checkpoint(state, keys, who: str) -> None:
    """``state`` is a checkpoint dict of this format holding ``keys``."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{who}: not a gmmkernels diffusion checkpoint (format {FORMAT!r})")
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{who}: the checkpoint lacks {missing} (an incomplete or foreign file)")


def read_checkpoint(path, device="cpu") -> dict:
    """The checkpoint dict in ``path``, loaded with ``weights_only=True`` (tensors and plain containers only: no
    pickled code runs). Anything else raises ValueError naming the file and what is wrong with it: missing, empty,
    truncated, not a torch zip archive (random bytes, a raw pickle), holding other Python objects, or holding
    something other than a checkpoint of this format."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise ValueError(f"{path}: cannot read the checkpoint: {e.strerror}") from None
    if size == 0:
        raise ValueError(f"{path}: the checkpoint file is empty (an interrupted copy?)")
    if not zipfile.is_zipfile(path):
        if head.startswith(b"PK"):
            what = "a truncated or damaged torch.save archive (an interrupted copy?)"
        elif head[:1] == b"\x80":
            what = "a raw pickle, not a torch.save archive; it is not loaded"
        else:
            what = "not a torch.save archive"
        raise ValueError(f"{path}: {what}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: holds Python objects other than tensors and plain containers, which are not loaded "
                         f"(weights only: {_first_line(e)[:200]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: a damaged torch.save archive: {_first_line(e)[:200]}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a gmmkernels diffusion checkpoint")
    return state


def load_checkpoint(path, device="cpu", use_ema: bool = True):
    """(model, schedule, checkpoint dict) from a trainer checkpoint; the EMA weights by default. A file that is not
    such a checkpoint raises ValueError naming it and what is wrong (see :func:`read_checkpoint`)."""
    from .models import build_model

    ck = read_checkpoint(path, device)
    try:
        check_checkpoint(ck, MODEL_KEYS, str(path))
        if ck["model_config"] is None:
            raise ValueError(f"{path}: the checkpoint has no model_config (model built outside gmmkernels)")
        model = build_model(ck["model_config"]).to(device)
        model.load_state_dict(ck["ema"] if use_ema else ck["model"])
        schedule = schedule_from_spec(ck["schedule"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        msg = _first_line(e)
        raise ValueError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    return model.eval(), schedule, ck
