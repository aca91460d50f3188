"""TD3+BC+CQL with supervised pretraining: the hybrid of Appendix G of "Efficient Offline
Reinforcement Learning: First Imitate, then Improve" (Jelley et al.).

td3bc_pretrain.py plus a CQL term on the critic (logsumexp over uniform random actions minus Q of
the data action, both critics), combined with the critic loss by eq. 21, in pretraining and in
finetuning, so that both actor (BC) and critic (CQL) stay close to the data.

    python td3bc_cql_pretrain.py --env-id pen-human --eval-protocol paper --eval-freq 10000
"""

import copy
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Literal, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

import utils


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """name of the experiment, part of the run directory name (default: this file's name, so a copy names its own runs)"""
    seed: int = 1
    """seed of the experiment (torch, numpy, random and the evaluation episodes)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled and a GPU is available, train on it (else the CPU)"""
    track: bool = False
    """if toggled, mirror the run to Weights & Biases (works with WANDB_MODE=offline)"""
    wandb_project_name: str = "first-imitate-then-improve"
    """the wandb project name"""
    wandb_entity: Optional[str] = None
    """the wandb entity (team)"""
    env_id: str = "hopper-medium"
    """dataset: a D4RL-style short name (hopper-medium, pen-human, hopper-random, ...) or a Minari id"""
    total_timesteps: Optional[int] = None
    """ALL gradient updates, pretraining included, so runs with and without pretraining compare at equal compute
    (default: 300k on Adroit, else 1M)"""
    pretrain_steps: Optional[Union[int, Literal["auto"]]] = None
    """supervised pretraining updates at the start of the run, 0 = no pretraining, or auto: until every pretrained
    loss has converged on held-out transitions, see --pretrain-tol (default: 200k on Adroit, else 50k)"""
    pretrain_mode: Literal["both", "actor", "critic"] = "both"
    """what to pretrain: actor (BC) and critic (MC returns), or only one of them (Appendix C)"""
    pretrain_tol: float = 0.01
    """auto: a loss has converged when its best validation value improved by less than this fraction over the last
    --pretrain-patience checks (a check every --log-freq updates); pretraining ends when all have"""
    pretrain_patience: int = 5
    """auto: the checks over which that improvement is measured (so never fewer than this plus one checks)"""
    pretrain_max_steps: Optional[int] = None
    """auto: at most this many pretraining updates (default: twice the fixed default, at most --total-timesteps)"""
    pretrain_val_fraction: float = 0.01
    """auto: share of the transitions (at most 5000) held out of the pretraining batches for the validation losses"""
    batch_size: int = 256
    """transitions per gradient update"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.005
    """Polyak rate of the target networks (target <- target + tau (online - target))"""
    learning_rate: float = 3e-4
    """Adam learning rate of actor and critic"""
    actor_hidden_dims: Tuple[int, ...] = (256, 256)
    """hidden layer widths of the actor (CORL's 256 x 2; the paper's code uses 256 256 256)"""
    critic_hidden_dims: Tuple[int, ...] = (256, 256)
    """hidden layer widths of both critics"""
    actor_layernorm: bool = True
    """LayerNorm after every hidden Linear of the actor (Appendix B)"""
    critic_layernorm: bool = True
    """LayerNorm after every hidden Linear of the critic (Appendix B)"""
    normalize_states: bool = True
    """normalize observations with the dataset mean/std (also at evaluation)"""
    td_lambda: Optional[float] = None
    """eq. 17: critic pretraining target (1 - lambda) MC + lambda TD(0), 0 = pure Monte-Carlo (default: 0.1 on halfcheetah, section 6.2; else 0)"""
    mc_tail: Literal["geometric", "none"] = "geometric"
    """return after a truncated last step r_T: geometric adds r_T gamma / (1 - gamma), none adds nothing"""
    mc_max_target: bool = False
    """Appendix F (Q-Transformer): finetuning TD target max(MC return, r + gamma Q')"""
    pretrain_cql_weight: Optional[float] = None
    """weight c of the CQL value regularizer during critic pretraining, combined by eq. 21 (default: --cql-weight)"""
    cql_weight: Optional[float] = None
    """weight c of the CQL term in finetuning, combined by eq. 21 (Table 3: pen 1, else 10)"""
    cql_n_actions: int = 10
    """uniform random actions in the CQL logsumexp"""
    cql_temperature: float = 1.0
    """temperature of the CQL logsumexp"""
    alpha: Optional[float] = None
    """TD3+BC alpha (Q-term weight); default from the task: hopper 10, halfcheetah 20, walker2d 5, pen 1, door/hammer/relocate 0.1, else 2.5"""
    policy_noise: float = 0.2
    """std of the target policy smoothing noise (in units of the action half-range)"""
    noise_clip: float = 0.5
    """clip of the target policy smoothing noise"""
    policy_frequency: int = 2
    """actor and target updates every this many critic updates (finetuning)"""
    eval_freq: int = 5000
    """evaluate (and checkpoint) every this many updates, and at the end"""
    eval_episodes: int = 10
    """evaluation episodes, run in parallel"""
    eval_protocol: Literal["d4rl", "paper"] = "d4rl"
    """d4rl, or the paper's Adroit protocol (Table 4: longer time limits, re-measured random scores)"""
    score_window: Optional[Tuple[int, int]] = None
    """START END: also report the mean normalized score of the evaluations in [START, END] (default: 200000 300000 on Adroit)"""
    log_freq: int = 1000
    """log losses (and check them for NaN/inf) every this many updates"""
    save_model: bool = False
    """write checkpoints (networks, optimizers, RNG states) to the run directory at every evaluation"""
    resume: Optional[str] = None
    """run directory of an interrupted --save-model run to continue (its config.json wins over other flags)"""
    runs_dir: str = "runs"
    """where run directories are created"""
    compile: bool = True
    """torch.compile the loss functions (1.25x faster updates measured on a 2-core CPU; 10-20 s warm-up per phase)"""
    bf16: bool = False
    """bfloat16 autocast for the hidden layers (CPU and GPU); output layers, losses, weights and Adam stay fp32"""


# ALGO LOGIC: default TD3+BC alpha by task: the paper's code for MuJoCo, Table 3 for Adroit
TD3BC_ALPHA = {"hopper": 10.0, "halfcheetah": 20.0, "walker2d": 5.0, "pen": 1.0, "door": 0.1, "hammer": 0.1, "relocate": 0.1}
# ALGO LOGIC: default CQL regularizer weight (Table 3)
CQL_WEIGHT = {"pen": 1.0}

# ALGO LOGIC: section 6.2, a little TD in the pretraining target (eq. 17) where MC returns are noisiest
TD_LAMBDA = {"halfcheetah": 0.1}


def resolve_defaults(args: Args) -> Args:
    """Fill the task-dependent defaults (fields left None), so config.json records what ran."""
    task = utils.task_of(utils.resolve_dataset_id(args.env_id))
    total, pretrain = utils.default_budget(task)
    filled = {
        "td_lambda": TD_LAMBDA.get(task, 0.0),
        "total_timesteps": total,
        "pretrain_steps": pretrain,
        "pretrain_max_steps": min(2 * pretrain, args.total_timesteps or total),
        "score_window": utils.default_score_window(task),
        "alpha": TD3BC_ALPHA.get(task, 2.5),
        "cql_weight": CQL_WEIGHT.get(task, 10.0),
    }
    cql_weight = filled["cql_weight"] if args.cql_weight is None else args.cql_weight
    filled["pretrain_cql_weight"] = cql_weight
    filled = {k: v for k, v in filled.items() if getattr(args, k) is None}
    print(f"defaults for task {task}: " + ", ".join(f"{k}={v}" for k, v in filled.items()))
    return replace(args, **filled)


# ALGO LOGIC: networks
def hidden_precision(x, bf16: bool):
    """--bf16: the hidden layers' matmuls in bfloat16 (autocast); callers run the output layer in fp32 on
    `.float()` inputs, so that Q-values, actions and log-probabilities keep fp32 resolution."""
    return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16)


def mlp(in_dim: int, hidden_dims, out_dim: int, layernorm: bool) -> nn.Sequential:
    layers = []
    for h in hidden_dims:
        layers += [nn.Linear(in_dim, h)] + ([nn.LayerNorm(h)] if layernorm else []) + [nn.ReLU()]
        in_dim = h
    return nn.Sequential(*layers, nn.Linear(in_dim, out_dim))


class Actor(nn.Module):
    """Deterministic policy: tanh squashed into the action box."""

    def __init__(self, obs_dim, act_dim, hidden_dims, layernorm, action_low, action_high, bf16=False):
        super().__init__()
        self.bf16 = bf16
        self.net = mlp(obs_dim, hidden_dims, act_dim, layernorm)
        self.register_buffer("action_scale", torch.as_tensor((action_high - action_low) / 2, dtype=torch.float32))
        self.register_buffer("action_bias", torch.as_tensor((action_high + action_low) / 2, dtype=torch.float32))

    def forward(self, obs):
        with hidden_precision(obs, self.bf16):
            hidden = self.net[:-1](obs)
        return torch.tanh(self.net[-1](hidden.float())) * self.action_scale + self.action_bias


class VectorizedLinear(nn.Module):
    """N independent Linear layers applied as one batched matmul: [n, B, in] -> [n, B, out] (first n members)."""

    def __init__(self, in_dim, out_dim, num_members):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_dim))
        bound = 1 / in_dim**0.5  # nn.Linear's default init, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x, n):
        return torch.baddbmm(self.bias[:n], x, self.weight[:n])


class VectorizedLayerNorm(nn.Module):
    """LayerNorm over the last dim with a separate affine per member."""

    def __init__(self, dim, num_members):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_members, 1, dim))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, dim))

    def forward(self, x, n):
        return torch.addcmul(self.bias[:n], F.layer_norm(x, x.shape[-1:]), self.weight[:n])


class Critic(nn.Module):
    """`num_critics` Q-functions as one batched module: Q(s, a) -> [num_critics, *batch]."""

    def __init__(self, obs_dim, act_dim, hidden_dims, layernorm, num_critics=2, bf16=False):
        super().__init__()
        self.bf16 = bf16
        dims = [obs_dim + act_dim, *hidden_dims, 1]
        self.linears = nn.ModuleList(VectorizedLinear(i, o, num_critics) for i, o in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(VectorizedLayerNorm(h, num_critics) for h in hidden_dims) if layernorm else None
        self.num_critics = num_critics

    def forward(self, obs, act, first_n: Optional[int] = None):
        """Q-values of the first `first_n` members (all by default) for shared inputs: [n, *batch]."""
        n = first_n or self.num_critics
        x = torch.cat([obs, act], -1)
        batch_shape = x.shape[:-1]
        return self.members(x.reshape(1, -1, x.shape[-1]).expand(n, -1, -1)).reshape(n, *batch_shape)

    def members(self, x):
        """Member i applied to x[i]: [n, B, obs + act] -> [n, B]."""
        n = x.shape[0]
        with hidden_precision(x, self.bf16):
            for i, linear in enumerate(self.linears[:-1]):
                x = linear(x, n)
                if self.norms is not None:
                    x = self.norms[i](x, n)
                x = F.relu(x)
        return self.linears[-1](x.float(), n).squeeze(-1)


# ALGO LOGIC: returns
def mc_returns(rewards, terminations, truncations, gamma, tail="geometric") -> np.ndarray:
    """Every-visit discounted return-to-go R_t = sum_n gamma^n r_{t+n} over flat arrays of many episodes.

    Per episode, backwards from its last step T:
        R_T = r_T                  the episode terminates at T (no future)
        R_T = r_T / (1 - gamma)    it is truncated at T, or T is the last element of the arrays: the tail is
                                   unknown; `geometric` repeats r_T forever, `none` takes R_T = r_T
        R_t = r_t + gamma R_{t+1}  inside the episode
    Computed as a log-depth scan of y_t = b_t + a_t y_{t+1} (no Python loop over steps; 1M steps in well
    under a second); tests/test_returns.py checks it against that plain reversed loop.
    """
    r = np.asarray(rewards, dtype=np.float64)
    term = np.asarray(terminations, dtype=bool)
    end = term | np.asarray(truncations, dtype=bool)
    if r.size == 0:
        return r
    end[-1] = True
    truncated = end & ~term
    if tail == "geometric" and truncated.any():  # with no truncated end (gamma 1 included) there is no tail
        if gamma >= 1:
            raise ValueError(
                f"tail 'geometric' needs gamma < 1: {int(truncated.sum())} episode(s) end truncated, "
                "where the tail gamma / (1 - gamma) diverges; use tail 'none'"
            )
        b = np.where(truncated, r / (1 - gamma), r)
    elif tail in ("geometric", "none"):
        b = r.copy()
    else:
        raise ValueError(f"unknown tail '{tail}': use 'geometric' or 'none'")
    a = np.where(end, 0.0, gamma)
    shift = 1
    while shift < r.size:
        # compose y_t = b_t + a_t y_{t+1} with the map `shift` steps ahead (a = 0 past episode ends)
        b[:-shift] += a[:-shift] * b[shift:]
        a[:-shift] *= a[shift:]
        a[-shift:] = 0.0
        shift *= 2
    return b


def cql_penalty(critic, obs, q_data, action_low, action_high, n_actions, temperature):
    """CQL gap per critic: T logsumexp_j Q(s, a_j) / T - Q(s, a) over uniform random actions a_j; [N, B]."""
    batch = obs.shape[0]
    low, high = action_low, action_high
    random_actions = low + (high - low) * torch.rand(batch, n_actions, low.shape[0], device=obs.device)
    q_random = critic(obs.unsqueeze(1).expand(-1, n_actions, -1), random_actions)  # [N, B, n_actions]
    return temperature * torch.logsumexp(q_random / temperature, dim=-1) - q_data


def combine_losses(primary, auxiliary, weight):
    """Eq. 21: primary / |primary| + weight * auxiliary / |auxiliary|, |.| the detached MAGNITUDE.
    (The paper's code divides by the signed value, which flips a term's gradient when it is negative.)"""
    return primary / (primary.detach().abs() + 1e-8) + weight * auxiliary / (auxiliary.detach().abs() + 1e-8)


def target_action(actor_target, next_obs, args):
    """TD3 target policy smoothing: clipped Gaussian noise, in units of the action half-range."""
    scale = actor_target.action_scale
    noise = (torch.randn(next_obs.shape[0], scale.shape[0], device=next_obs.device) * args.policy_noise).clamp(-args.noise_clip, args.noise_clip)
    low, high = actor_target.action_bias - scale, actor_target.action_bias + scale
    return torch.clamp(actor_target(next_obs) + noise * scale, low, high)


def td_target(actor_target, critic_target, rew, next_obs, term, args):
    """r + gamma (1 - termination) min_i Q'_i(s', a~'); truncated steps still bootstrap."""
    next_act = target_action(actor_target, next_obs, args)
    return rew + args.gamma * (1 - term) * critic_target(next_obs, next_act).min(0).values


def pretrain_critic_loss(critic, actor_target, critic_target, batch, args):
    """Algorithm 1: MSE of every critic to the MC return (or the eq. 17 blend), plus optional CQL."""
    obs, target = batch["obs"], batch["mc_return"]
    if args.td_lambda > 0:  # eq. 17
        with torch.no_grad():
            td = td_target(actor_target, critic_target, batch["rew"], batch["next_obs"], batch["term"], args)
        target = (1 - args.td_lambda) * target + args.td_lambda * td
    q = critic(obs, batch["act"])
    mc_loss = F.mse_loss(q, target.expand_as(q), reduction="none").mean(1).sum()
    if args.pretrain_cql_weight > 0:  # section 5.2: value regularization during pretraining
        low = actor_target.action_bias - actor_target.action_scale
        high = actor_target.action_bias + actor_target.action_scale
        cql = cql_penalty(critic, obs, q, low, high, args.cql_n_actions, args.cql_temperature).mean(1).sum()
        return combine_losses(mc_loss, cql, args.pretrain_cql_weight), {"losses/critic_mc": mc_loss, "losses/critic_cql": cql}
    return mc_loss, {"losses/critic_mc": mc_loss}


def finetune_critic_loss(critic, actor_target, critic_target, batch, args):
    """TD3 + CQL: MSE of both critics to the clipped double-Q target (Appendix F: max with the MC return),
    plus the CQL gap of both critics, combined by eq. 21."""
    with torch.no_grad():
        q_target = td_target(actor_target, critic_target, batch["rew"], batch["next_obs"], batch["term"], args)
        if args.mc_max_target:
            q_target = torch.maximum(q_target, batch["mc_return"])
    q = critic(batch["obs"], batch["act"])
    td_loss = F.mse_loss(q, q_target.expand_as(q), reduction="none").mean(1).sum()
    low = actor_target.action_bias - actor_target.action_scale
    high = actor_target.action_bias + actor_target.action_scale
    cql = cql_penalty(critic, batch["obs"], q, low, high, args.cql_n_actions, args.cql_temperature).mean(1).sum()
    loss = combine_losses(td_loss, cql, args.cql_weight)
    return loss, {"losses/critic_td": td_loss, "losses/critic_cql": cql, "losses/q_mean": q.mean().detach()}


def finetune_actor_loss(actor, critic, obs, act, alpha):
    """TD3+BC: -lambda Q1(s, pi(s)) + (pi(s) - a)^2 with lambda = alpha / mean|Q1| (detached)."""
    pi = actor(obs)
    q_pi = critic(obs, pi, first_n=1)[0]
    bc_loss = F.mse_loss(pi, act)
    loss = -alpha / q_pi.abs().mean().detach() * q_pi.mean() + bc_loss
    return loss, {"losses/actor": loss, "losses/actor_bc": bc_loss}


def bc_loss(actor, obs, act):
    """Algorithm 1: behaviour cloning of the deterministic actor."""
    loss = F.mse_loss(actor(obs), act)
    return loss, {"losses/actor_bc": loss}


def gradient_step(optimizer, loss):
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


@torch.no_grad()
def soft_update(target_params, online_params, tau):
    """Polyak averaging, target <- target + tau (online - target), for all tensors in one fused call."""
    torch._foreach_lerp_(target_params, online_params, tau)


def make_table(fields, device):
    """Every per-transition field as columns of one tensor, so that a batch is a single gather.
    Returns the table and each field's width; add a field by adding an entry to `fields`."""
    columns = [np.asarray(v, np.float32).reshape(len(v), -1) for v in fields.values()]
    table = torch.as_tensor(np.concatenate(columns, axis=1), device=device)
    return table, {name: c.shape[1] for name, c in zip(fields, columns)}


def sample_batch(table, widths, batch_size, rows=None):
    """Uniformly sampled transitions (of `rows` if given) as a dict of named fields; 1-wide fields come out as vectors."""
    idx = torch.randint(table.shape[0] if rows is None else rows.shape[0], (batch_size,), device=table.device)
    return table_rows(table, widths, idx if rows is None else rows[idx])


def table_rows(table, widths, idx):
    parts = table[idx].split(list(widths.values()), dim=1)
    return {name: p.squeeze(1) if p.shape[1] == 1 else p for name, p in zip(widths, parts)}


# plumbing: --pretrain-steps auto
def validation_split(table, args: Args):
    """The held-out rows for the validation losses and the rows that pretraining samples from, drawn with their own
    generator (seeded by --seed) so that the training random stream stays that of a fixed-length run."""
    perm = torch.randperm(table.shape[0], generator=torch.Generator().manual_seed(args.seed)).to(table.device)
    n_val = min(5000, max(1, int(table.shape[0] * args.pretrain_val_fraction)))
    return perm[:n_val], perm[n_val:]


@torch.no_grad()
def validation_losses(actor, critic, val, plateaus):
    """The pretraining losses on the held-out batch: BC MSE, and the critics' MSE to the MC return (their mean)."""
    values = {}
    if "actor" in plateaus:
        values["actor"] = F.mse_loss(actor(val["obs"]), val["act"])
    if "critic" in plateaus:
        q = critic(val["obs"], val["act"])
        values["critic"] = F.mse_loss(q, val["mc_return"].expand_as(q))
    return values


def auto_pretrain_check(plateaus, converged, values, update, args: Args, run_dir):
    """Feeds each loss still converging to its utils.Plateau (which states the rule) and returns the update at
    which pretraining ends: this one once all have converged or at the cap, else the cap. The choice is printed
    and written to config.json (pretrain_steps_chosen, and the update at which each loss converged)."""
    for part, value in values.items():
        if part not in converged and plateaus[part].update(float(value)):
            converged[part] = update
    if len(converged) < len(plateaus) and update < args.pretrain_max_steps:
        return args.pretrain_max_steps
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    config.update(pretrain_steps_chosen=update, pretrain_converged=dict(converged))
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    how = ", ".join(f"{p} converged at {converged[p]}" if p in converged else f"{p} capped by --pretrain-max-steps" for p in plateaus)
    print(f"auto pretraining ends at update {update}: {how}", flush=True)
    return update


# plumbing
def check_args(args: Args):
    problems = []
    for name in (
        "total_timesteps",
        "batch_size",
        "eval_freq",
        "eval_episodes",
        "log_freq",
        "policy_frequency",
        "cql_n_actions",
    ):
        if getattr(args, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    auto = args.pretrain_steps == "auto"
    flag, steps = ("--pretrain-max-steps", args.pretrain_max_steps) if auto else ("--pretrain-steps", args.pretrain_steps)
    if steps < int(auto):
        problems.append(f"{flag} must be >= {int(auto)} (got {steps})")
    if steps > args.total_timesteps:
        problems.append(
            f"{flag} {steps} exceeds --total-timesteps {args.total_timesteps}, which counts pretraining too: raise --total-timesteps or lower {flag}"
        )
    if auto and not (args.pretrain_tol >= 0 and args.pretrain_patience >= 1 and 0 < args.pretrain_val_fraction < 1):
        problems.append(
            "--pretrain-steps auto needs --pretrain-tol >= 0, --pretrain-patience >= 1 and --pretrain-val-fraction in "
            f"(0, 1) (got {args.pretrain_tol}, {args.pretrain_patience}, {args.pretrain_val_fraction})"
        )
    if not args.learning_rate > 0:
        problems.append(f"--learning-rate must be > 0 (got {args.learning_rate})")
    if not args.resume and os.path.exists(args.runs_dir) and not os.path.isdir(args.runs_dir):
        problems.append(f"--runs-dir {args.runs_dir} is a file, not a directory: name a folder (it is created if missing)")
    if not 0.0 <= args.td_lambda <= 1.0:
        problems.append(f"--td-lambda must be in [0, 1] (got {args.td_lambda})")
    if not 0.0 < args.gamma <= 1.0:
        problems.append(f"--gamma must be in (0, 1] (got {args.gamma})")
    if not 0.0 <= args.tau <= 1.0:
        problems.append(f"--tau must be in [0, 1] (got {args.tau})")
    if args.cql_weight < 0:
        problems.append(f"--cql-weight must be >= 0 (got {args.cql_weight})")
    if args.pretrain_cql_weight < 0:
        problems.append(f"--pretrain-cql-weight must be >= 0 (got {args.pretrain_cql_weight})")
    if args.cql_temperature <= 0:
        problems.append(f"--cql-temperature must be > 0 (got {args.cql_temperature})")
    if args.score_window is not None and args.score_window[0] > args.score_window[1]:
        problems.append(f"--score-window START END needs START <= END (got {args.score_window})")
    for name in ("actor_hidden_dims", "critic_hidden_dims"):
        if not getattr(args, name) or min(getattr(args, name)) < 1:
            problems.append(f"--{name.replace('_', '-')} needs one or more positive widths (got {getattr(args, name)})")
    if problems:
        raise utils.ConfigError("; ".join(problems))


def check_data(args: Args, data):
    """The flags that only the loaded dataset can check, before the first update."""
    n = len(data["rewards"])
    truncated_ends = int(((data["truncations"] > 0) & (data["terminations"] == 0)).sum())
    problems = []
    if args.batch_size > n:
        problems.append(f"--batch-size {args.batch_size} exceeds the dataset's {n} transitions: use at most {n}")
    if args.gamma >= 1.0 and args.mc_tail == "geometric" and truncated_ends:
        problems.append(
            f"--gamma {args.gamma} with --mc-tail geometric: {truncated_ends} episode(s) end truncated, where the "
            "tail gamma / (1 - gamma) diverges; use --mc-tail none"
        )
    if problems:
        raise utils.ConfigError("; ".join(problems))


def load_resume_args(run_dir: str) -> Args:
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise utils.ConfigError(f"--resume {run_dir}: no config.json there; pass the run directory printed at the start of the run")
    with open(path) as f:
        config = json.load(f)
    if "hidden_dims" in config:  # runs written before the actor/critic widths were separate flags
        config["actor_hidden_dims"] = config["critic_hidden_dims"] = config.pop("hidden_dims")
    config["actor_hidden_dims"], config["critic_hidden_dims"] = tuple(config["actor_hidden_dims"]), tuple(config["critic_hidden_dims"])
    config["score_window"] = tuple(config["score_window"]) if config.get("score_window") else None
    config["resume"] = run_dir
    written_by = config.pop("script", None)
    config.pop("pretrain_steps_chosen", None), config.pop("pretrain_converged", None)  # records of --pretrain-steps auto
    unknown = sorted(set(config) - set(Args.__dataclass_fields__))
    this_script = os.path.basename(__file__)
    if unknown or (written_by is not None and written_by != this_script):
        by = written_by or f"another script (its config has {', '.join(unknown)}, which {this_script} lacks)"
        fix = f"python {written_by} --resume {run_dir}" if written_by else "the script that wrote it"
        raise utils.ConfigError(f"--resume {run_dir}: that run was written by {by}, not {this_script}; resume it with {fix}")
    return resolve_defaults(Args(**config))  # fills only what an older config lacks (flags added since)


def make_run_dir(args: Args) -> str:
    run_dir = os.path.join(args.runs_dir, f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}")
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump({**asdict(args), "script": os.path.basename(__file__)}, f, indent=2)
    return run_dir


def save_checkpoint(run_dir, state: dict, row: dict, args: Args, **extra):
    """Every module's and optimizer's state_dict, the evaluation row's update, phase and clocks, the RNG
    states and `extra`, written atomically (a kill leaves the previous checkpoint intact)."""
    ckpt = {name: module.state_dict() for name, module in state.items()}
    ckpt.update(
        {k: row[k] for k in ("update", "phase", "wall_s", "train_s")},
        args=asdict(args),
        **extra,
        torch_rng=torch.get_rng_state(),
        numpy_rng=np.random.get_state(),
        python_rng=random.getstate(),
        cuda_rng=torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
    )
    path = os.path.join(run_dir, "checkpoint.pt")
    torch.save(ckpt, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_checkpoint(run_dir, state: dict, device) -> dict:
    """Loads what save_checkpoint wrote back into the modules, optimizers and RNGs; returns the checkpoint."""
    path = os.path.join(run_dir, "checkpoint.pt")
    if not os.path.exists(path):
        raise utils.ConfigError(
            f"--resume {run_dir}: no checkpoint.pt there (the run had no --save-model, or was stopped before its first evaluation); start it again"
        )
    ckpt = torch.load(path, map_location=device, weights_only=False)
    for name, module in state.items():
        module.load_state_dict(ckpt[name])
    torch.set_rng_state(ckpt["torch_rng"])
    np.random.set_state(ckpt["numpy_rng"])
    random.setstate(ckpt["python_rng"])
    if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(ckpt["cuda_rng"])
    print(f"resuming {run_dir} at update {ckpt['update']} (settings from its config.json)")
    return ckpt


def start_wandb(args: Args, run_dir: str):
    import wandb

    name = os.path.basename(run_dir)
    wandb.init(
        project=args.wandb_project_name,
        entity=args.wandb_entity,
        config=asdict(args),
        dir=run_dir,
        name=name,
        id=name[-64:],
        resume="allow",
        group=f"{args.env_id.replace('/', '-')}__{args.exp_name}",
        save_code=True,
    )
    return wandb


def main(args: Args):
    args = load_resume_args(args.resume) if args.resume else resolve_defaults(args)
    check_args(args)
    dataset = utils.load_dataset(args.env_id)
    data = utils.flatten_dataset(dataset)
    check_data(args, data)
    ref = utils.reference_scores(dataset, args.eval_protocol)
    run_dir = args.resume or make_run_dir(args)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    utils.print_run_header(dataset, data, ref, args.eval_protocol, device, run_dir)
    print(
        f"TD3+BC alpha {args.alpha}, CQL weight {args.cql_weight} (pretraining {args.pretrain_cql_weight}), "
        f"{args.pretrain_steps} pretraining of {args.total_timesteps} updates"
    )

    # ALGO LOGIC: returns-to-go of the whole dataset, once (Algorithm 1, first loop)
    mc_return = mc_returns(data["rewards"], data["terminations"], data["truncations"], args.gamma, args.mc_tail)
    obs_mean, obs_std = utils.state_normalizer(data["observations"], args.normalize_states)
    table, widths = make_table(
        {
            "obs": (data["observations"] - obs_mean) / obs_std,
            "act": data["actions"],
            "rew": data["rewards"],
            "next_obs": (data["next_observations"] - obs_mean) / obs_std,
            "term": data["terminations"],
            "mc_return": mc_return,
        },
        device,
    )
    obs_dim, act_dim = widths["obs"], widths["act"]
    low, high = dataset.action_space.low.astype(np.float32), dataset.action_space.high.astype(np.float32)
    actor = Actor(obs_dim, act_dim, args.actor_hidden_dims, args.actor_layernorm, low, high, bf16=args.bf16).to(device)
    critic = Critic(obs_dim, act_dim, args.critic_hidden_dims, args.critic_layernorm, bf16=args.bf16).to(device)
    actor_target, critic_target = copy.deepcopy(actor), copy.deepcopy(critic)
    fused = device.type in ("cpu", "cuda")
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate, fused=fused)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate, fused=fused)
    online_params = list(actor.parameters()) + list(critic.parameters())
    target_params = list(actor_target.parameters()) + list(critic_target.parameters())
    compile_fn = torch.compile if args.compile else (lambda fn: fn)
    critic_pretrain_fn, bc_fn = compile_fn(pretrain_critic_loss), compile_fn(bc_loss)
    critic_finetune_fn, actor_finetune_fn = compile_fn(finetune_critic_loss), compile_fn(finetune_actor_loss)

    # plumbing: resume, logs, evaluation
    state = dict(actor=actor, critic=critic, actor_target=actor_target, critic_target=critic_target)  # checkpointed
    state.update(actor_optimizer=actor_optimizer, critic_optimizer=critic_optimizer)
    ckpt = load_checkpoint(run_dir, state, device) if args.resume else {}
    log = utils.RunLog(run_dir, args.total_timesteps, resume=ckpt or None)
    wandb = start_wandb(args, run_dir) if args.track else None
    eval_envs = utils.make_eval_envs(dataset, args.eval_episodes, utils.eval_time_limit(dataset, args.eval_protocol))
    eval_seeds = utils.eval_seeds(args.seed, args.eval_episodes)

    @torch.no_grad()
    def policy(obs):
        return actor(torch.as_tensor(obs, device=device)).cpu().numpy()

    pretrain_actor = args.pretrain_mode in ("both", "actor")
    pretrain_critic = args.pretrain_mode in ("both", "critic")
    auto = args.pretrain_steps == "auto"  # --pretrain-steps auto: until the validation losses have converged
    val_rows, train_rows = validation_split(table, args) if auto else (None, None)
    parts = [part for part, on in (("actor", pretrain_actor), ("critic", pretrain_critic)) if on]
    plateaus = {p: utils.Plateau(args.pretrain_tol, args.pretrain_patience, ckpt.get("plateaus", {}).get(p)) for p in parts}
    converged, pretrain_end = ckpt.get("converged", {}), ckpt.get("pretrain_end", args.pretrain_max_steps) if auto else args.pretrain_steps
    losses = {}
    for global_step in range(ckpt.get("update", 0), args.total_timesteps):
        phase = "pretrain" if global_step < pretrain_end else "finetune"
        batch = sample_batch(table, widths, args.batch_size, train_rows if phase == "pretrain" else None)

        # ALGO LOGIC: one update
        if phase == "pretrain":  # Algorithm 1, second loop
            if pretrain_critic:
                loss, info = critic_pretrain_fn(critic, actor_target, critic_target, batch, args)
                losses.update(info)
                gradient_step(critic_optimizer, loss)
            if pretrain_actor:
                loss, info = bc_fn(actor, batch["obs"], batch["act"])
                losses.update(info)
                gradient_step(actor_optimizer, loss)
            soft_update(target_params, online_params, args.tau)
        else:  # TD3+BC
            loss, info = critic_finetune_fn(critic, actor_target, critic_target, batch, args)
            losses.update(info)
            gradient_step(critic_optimizer, loss)
            if global_step % args.policy_frequency == 0:
                critic.requires_grad_(False)  # the actor needs dQ/da only, not the critic's weight grads
                loss, info = actor_finetune_fn(actor, critic, batch["obs"], batch["act"], args.alpha)
                critic.requires_grad_(True)
                losses.update(info)
                gradient_step(actor_optimizer, loss)
                soft_update(target_params, online_params, args.tau)

        # plumbing: the only host syncs are here, every --log-freq updates and at evaluations
        update = global_step + 1
        if auto and phase == "pretrain" and (update % args.log_freq == 0 or update == pretrain_end):
            values = validation_losses(actor, critic, table_rows(table, widths, val_rows), plateaus)
            losses.update({f"validation/{part}": value for part, value in values.items()})
            pretrain_end = auto_pretrain_check(plateaus, converged, values, update, args, run_dir)
        is_eval = update % args.eval_freq == 0 or update == args.total_timesteps
        if update % args.log_freq == 0 or is_eval:
            values = log.losses(losses, update, phase, args.log_freq)  # raises on NaN/inf
            losses.clear()  # the next interval reports only what it computed
            if wandb:
                wandb.log({**values, "charts/SPS": log.ups, "charts/phase": int(phase == "finetune")}, step=update)
        if is_eval:
            returns, scores = utils.evaluate(policy, eval_envs, obs_mean, obs_std, eval_seeds, ref)
            row = log.evaluation(update, phase, returns, scores)
            if wandb:
                wandb.log({"eval/return": row["return_mean"], "eval/normalized_score": row["normalized_mean"]}, step=update)
            if args.save_model:
                extra = dict(plateaus={p: q.history for p, q in plateaus.items()}, converged=converged, pretrain_end=pretrain_end)
                save_checkpoint(run_dir, state, row, args, obs_mean=obs_mean, obs_std=obs_std, **(extra if auto else {}))

    eval_envs.close()
    summary = log.finish(args.score_window)
    if wandb:
        wandb.run.summary.update(summary)
        wandb.finish()
    return run_dir


if __name__ == "__main__":
    try:
        main(tyro.cli(Args))
    except (
        utils.ConfigError,
        utils.DatasetError,
        FloatingPointError,
    ) as e:  # ours: one line; anything else keeps its traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
