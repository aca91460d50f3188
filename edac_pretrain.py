"""EDAC with soft supervised pretraining: Algorithm 2 of "Efficient Offline Reinforcement Learning:
First Imitate, then Improve" (Jelley et al.), section 5.3.

Phase 1 (first `--actor-pretrain-fraction` of `--pretrain-steps`): soft behaviour cloning of the
tanh-Gaussian actor with auto-tuned alpha (eq. 20). Then soft returns-to-go of the dataset with the
BC actor's entropies and the frozen alpha (eq. 19). Phase 2 (rest of `--pretrain-steps`): the N
critics by MSE to those returns plus EDAC's diversity term, targets Polyak-updated. Then EDAC
(An et al., 2021) for the rest of `--total-timesteps`.

    python edac_pretrain.py --env-id hopper-medium --pretrain-steps 50000
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
    actor_hidden_dims: Tuple[int, ...] = (256, 256, 256)  # differs from td3bc_pretrain.py on purpose: EDAC's 256 x 3
    """hidden layer widths of the actor"""
    critic_hidden_dims: Tuple[int, ...] = (256, 256, 256)
    """hidden layer widths of every critic"""
    actor_layernorm: bool = True
    """LayerNorm after every hidden Linear of the actor (Appendix B)"""
    critic_layernorm: bool = True
    """LayerNorm after every hidden Linear of the critic (Appendix B)"""
    layernorm_affine: bool = True
    """learnable LayerNorm scale and shift (off: plain normalization, as the paper's code)"""
    normalize_states: bool = True
    """normalize observations with the dataset mean/std (also at evaluation)"""
    td_lambda: Optional[float] = None
    """eq. 17: critic pretraining target (1 - lambda) MC + lambda TD(0), 0 = pure Monte-Carlo (default: 0.1 on halfcheetah and walker2d, section 6.2; else 0)"""
    mc_tail: Literal["geometric", "none"] = "geometric"
    """return after a truncated last step r_T: geometric adds r_T gamma / (1 - gamma), none adds nothing"""
    actor_pretrain_fraction: float = 0.5
    """share of --pretrain-steps spent on soft BC (phase 1); the rest pretrains the critics (phase 2)"""
    pretrain_mse: Literal["sum", "mean"] = "sum"
    """how critic pretraining adds up the N members' MSE: sum (as EDAC's own critic loss) or mean (the paper's
    code, which makes the diversity term weigh N times more)"""
    pretrain_cql_weight: Optional[float] = None
    """weight c of a CQL value regularizer in critic pretraining (Algorithm 1's R(Q), as in td3bc_pretrain.py),
    relative to the MSE as in eq. 21, so that the ensemble starts pessimistic off the data: without it the actor
    leaves the data and the score collapses after the switch (docs/RESULTS.md); 0 = the paper's EDAC, with --cql-weight
    following it unless set (default 1; 0 where HELD_ACTOR says so)"""
    cql_weight: Optional[float] = None
    """weight c of the same CQL regularizer in the EDAC critic loss after the switch, relative to the TD loss as in
    eq. 21, so that the pessimism of --pretrain-cql-weight does not wear off (not in the paper; default: the
    --pretrain-cql-weight, so --pretrain-cql-weight 0 alone is the paper's EDAC; 0 where HELD_ACTOR says so)"""
    cql_n_actions: int = 4  # differs from td3bc_pretrain.py on purpose: each random action costs N critics
    """uniform random actions in the CQL logsumexp"""
    cql_temperature: float = 1.0
    """temperature of the CQL logsumexp"""
    cql_cap: bool = True
    """cap the eq. 21 factor |loss| / |CQL| of the CQL terms so that the CQL gradient on a Q-value is never larger
    than the loss's typical one (2 x its RMS error): the CQL gap starts near 0, where the bare factor explodes
    and the CQL term stalls the critics' fit for thousands of updates (docs/RESULTS.md); --no-cql-cap = eq. 21 as is"""
    anchor_weight: Optional[float] = None
    """hold the actor near the data after the switch: hard BC of its deterministic action, weighted against the SAC
    loss as in eq. 21, starting at this weight and decaying linearly to 0 over --anchor-steps (not in the paper; 0 =
    off; default: 1 on halfcheetah, else 0; HELD_ACTOR below)"""
    anchor_steps: Optional[int] = None
    """actor updates after the switch over which --anchor-weight decays to 0; 0 = it never decays (default: 0 on
    halfcheetah, else 5000)"""
    alpha_first: bool = False
    """update order alpha -> actor -> critic (the paper's code) instead of actor -> alpha -> critic"""
    log_alpha_clip: Optional[float] = None
    """clip log(alpha) to [-C, C] after every temperature step (the paper's code: 10; default: no clip)"""
    critic_warmup_steps: int = 0
    """after pretraining, first this many EDAC updates of the critics alone (actor and alpha wait), so that the
    ensemble can turn pessimistic off the data before the actor moves; 0 = the paper's EDAC (not in the paper)"""
    entropy_samples: int = 10
    """actions sampled per state to estimate the BC actor's entropy in the soft returns"""
    num_critics: Optional[int] = None
    """ensemble size N; default from the task: hopper 50, halfcheetah/walker2d 10, pen 20, door/hammer/relocate 50, else 10"""
    eta: Optional[float] = None
    """weight of EDAC's ensemble-gradient diversity loss; default from the task (hopper/halfcheetah/walker2d 1,
    pen-human 1000, pen-cloned 10, other Adroit 200, else 1)"""
    initial_alpha: float = 1.0
    """initial entropy temperature (auto-tuned towards the target entropy -|A|)"""
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
    """torch.compile the actor losses (the critic losses differentiate twice and stay eager)"""
    bf16: bool = False
    """bfloat16 autocast for the hidden layers (CPU and GPU); output layers, losses, weights and Adam stay fp32"""


# ALGO LOGIC: per-task defaults (An et al. 2021 / CORL for MuJoCo; paper Table 3 for Adroit)
EDAC_NUM_CRITICS = {"hopper": 50, "halfcheetah": 10, "walker2d": 10, "pen": 20, "door": 50, "hammer": 50, "relocate": 50}
EDAC_ETA = {
    "hopper": 1.0,
    "halfcheetah": 1.0,
    "walker2d": 1.0,
    "pen": 200.0,
    "door": 200.0,
    "hammer": 200.0,
    "relocate": 200.0,
}
EDAC_ETA_BY_DATASET = {"pen-human": 1000.0, "pen-cloned": 10.0}


def task_defaults(env_id: str, task: Optional[str]):
    """(num_critics, eta) for a dataset, matched by task and, for pen, by level."""
    eta = EDAC_ETA.get(task, 1.0)
    for name, value in EDAC_ETA_BY_DATASET.items():
        t, level = name.split("-")
        if task == t and level in env_id:
            eta = value
    return EDAC_NUM_CRITICS.get(task, 10), eta


# ALGO LOGIC: section 6.2, a little TD in the pretraining target (eq. 17) where MC returns are noisiest
TD_LAMBDA = {"halfcheetah": 0.1, "walker2d": 0.1}


# ALGO LOGIC: not in the paper: where the actor must stay held to the data after the switch. On halfcheetah the RL
# policy flips the cheetah onto its back unless it is, so a constant anchor holds it there, and the CQL term is off in
# both phases (with the actor held it only drove the temperature and Q away, docs/RESULTS.md); elsewhere no anchor
HELD_ACTOR = {"halfcheetah": {"anchor_weight": 1.0, "anchor_steps": 0, "pretrain_cql_weight": 0.0, "cql_weight": 0.0}}


def resolve_defaults(args: Args) -> Args:
    """Fill the task-dependent defaults (fields left None), so config.json records what ran."""
    task = utils.task_of(utils.resolve_dataset_id(args.env_id))
    total, pretrain = utils.default_budget(task)
    num_critics, eta = task_defaults(args.env_id, task)
    filled = {
        "td_lambda": TD_LAMBDA.get(task, 0.0),
        "total_timesteps": total,
        "pretrain_steps": pretrain,
        "pretrain_max_steps": min(2 * pretrain, args.total_timesteps or total),
        "score_window": utils.default_score_window(task),
        "num_critics": num_critics,
        "eta": eta,
        "anchor_weight": 0.0,
        "anchor_steps": 5000,
        "pretrain_cql_weight": 1.0,
    }
    filled["cql_weight"] = filled["pretrain_cql_weight"] if args.pretrain_cql_weight is None else args.pretrain_cql_weight
    filled.update(HELD_ACTOR.get(task, {}))
    filled = {k: v for k, v in filled.items() if getattr(args, k) is None}
    print(f"defaults for task {task}: " + ", ".join(f"{k}={v}" for k, v in filled.items()))
    return replace(args, **filled)


# ALGO LOGIC: networks
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def hidden_precision(x, bf16: bool):
    """--bf16: the hidden layers' matmuls in bfloat16 (autocast); callers run the output layer in fp32 on
    `.float()` inputs, so that Q-values, actions and log-probabilities keep fp32 resolution."""
    return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16)


def mlp(in_dim: int, hidden_dims, out_dim: int, layernorm: bool, affine: bool = True) -> nn.Sequential:
    layers = []
    for h in hidden_dims:
        layers += [nn.Linear(in_dim, h)] + ([nn.LayerNorm(h, elementwise_affine=affine)] if layernorm else []) + [nn.ReLU()]
        in_dim = h
    return nn.Sequential(*layers, nn.Linear(in_dim, out_dim))


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy in the action box; log-std clipped to [-5, 2]."""

    def __init__(self, obs_dim, act_dim, hidden_dims, layernorm, action_low, action_high, bf16=False, affine=True):
        super().__init__()
        self.bf16 = bf16
        self.net = mlp(obs_dim, hidden_dims, 2 * act_dim, layernorm, affine)
        nn.init.uniform_(self.net[-1].weight, -1e-3, 1e-3)  # CORL's EDAC head init
        nn.init.uniform_(self.net[-1].bias, -1e-3, 1e-3)
        self.register_buffer("action_scale", torch.as_tensor((action_high - action_low) / 2, dtype=torch.float32))
        self.register_buffer("action_bias", torch.as_tensor((action_high + action_low) / 2, dtype=torch.float32))

    def dist(self, obs):
        with hidden_precision(obs, self.bf16):
            hidden = self.net[:-1](obs)
        mu, log_std = self.net[-1](hidden.float()).chunk(2, -1)
        return mu, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()

    def squashed_log_prob(self, u, mu, std):
        """log pi(a) for a = tanh(u) * scale + bias; log(1 - tanh(u)^2) in its stable softplus form."""
        log_prob = torch.distributions.Normal(mu, std).log_prob(u)
        log_prob = log_prob - 2 * (np.log(2) - u - F.softplus(-2 * u)) - torch.log(self.action_scale)
        return log_prob.sum(-1)

    def forward(self, obs, deterministic: bool = False):
        """(action, log pi(action | obs)); the deterministic action is tanh(mean)."""
        mu, std = self.dist(obs)
        u = mu if deterministic else mu + std * torch.randn_like(mu)
        return torch.tanh(u) * self.action_scale + self.action_bias, self.squashed_log_prob(u, mu, std)

    def log_prob(self, obs, act):
        """log pi(a | s) of given (dataset) actions: atanh of the action clipped inside (-1, 1)."""
        mu, std = self.dist(obs)
        y = ((act - self.action_bias) / self.action_scale).clamp(-1 + 1e-6, 1 - 1e-6)
        return self.squashed_log_prob(torch.atanh(y), mu, std)


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
    """LayerNorm over the last dim with a separate affine per member (affine=False: fixed scale 1, shift 0)."""

    def __init__(self, dim, num_members, affine=True):
        super().__init__()
        weight, bias = torch.ones(num_members, 1, dim), torch.zeros(num_members, 1, dim)
        if affine:
            self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias)

    def forward(self, x, n):
        # Written out rather than F.layer_norm: the diversity term differentiates twice, and the
        # double backward of these plain ops ran ~20% faster than F.layer_norm's on CPU.
        centered = x - x.mean(-1, keepdim=True)
        normalized = centered * torch.rsqrt(centered.square().mean(-1, keepdim=True) + 1e-5)
        return torch.addcmul(self.bias[:n], normalized, self.weight[:n])


class Critic(nn.Module):
    """`num_critics` Q-functions as one batched module: Q(s, a) -> [num_critics, *batch]."""

    def __init__(self, obs_dim, act_dim, hidden_dims, layernorm, num_critics=2, bf16=False, affine=True):
        super().__init__()
        self.bf16 = bf16
        dims = [obs_dim + act_dim, *hidden_dims, 1]
        self.linears = nn.ModuleList(VectorizedLinear(i, o, num_critics) for i, o in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(VectorizedLayerNorm(h, num_critics, affine) for h in hidden_dims) if layernorm else None
        self.num_critics = num_critics
        with torch.no_grad():  # CORL's EDAC init: hidden biases 0.1, small output layer
            for linear in self.linears[:-1]:
                linear.bias.fill_(0.1)
            self.linears[-1].weight.uniform_(-3e-3, 3e-3)
            self.linears[-1].bias.uniform_(-3e-3, 3e-3)

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
def soft_mc_returns(rewards, entropies, terminations, truncations, gamma, alpha, tail="geometric") -> np.ndarray:
    """Soft return-to-go (eq. 19): R_t = sum_n gamma^n r_{t+n} + alpha sum_{n>=1} gamma^n H(s_{t+n}).

    Flat arrays of many episodes; entropies[t] = H(pi(.|s_t)), so the bonus starts at t+1. Per episode,
    backwards from its last step T:
        R_T = r_T                                            the episode terminates at T
        R_T = r_T + gamma / (1 - gamma) (r_T + alpha H(s_T))  truncated at T, or T is the last element:
                                                             `geometric` repeats the last step forever,
                                                             `none` takes R_T = r_T
        R_t = r_t + gamma (alpha H(s_{t+1}) + R_{t+1})       inside the episode
    Computed as a log-depth scan of y_t = b_t + a_t y_{t+1} (no Python loop over steps); tests/test_edac.py
    checks it against that plain reversed loop.
    """
    r = np.asarray(rewards, dtype=np.float64)
    h = np.asarray(entropies, dtype=np.float64)
    term = np.asarray(terminations, dtype=bool)
    end = term | np.asarray(truncations, dtype=bool)
    if r.size == 0:
        return r
    end[-1] = True
    next_h = np.append(h[1:], 0.0)
    b = np.where(end, r, r + gamma * alpha * next_h)
    truncated = end & ~term
    if tail == "geometric" and truncated.any():  # with no truncated end (gamma 1 included) there is no tail
        if gamma >= 1:
            raise ValueError(
                f"tail 'geometric' needs gamma < 1: {int(truncated.sum())} episode(s) end truncated, "
                "where the tail gamma / (1 - gamma) diverges; use tail 'none'"
            )
        b = np.where(truncated, r + gamma / (1 - gamma) * (r + alpha * h), b)
    elif tail not in ("geometric", "none"):
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


@torch.no_grad()
def policy_entropies(actor, observations, num_samples, batch_size=65536):
    """H(pi(.|s)) ~ -mean_k log pi(a_k|s), a_k ~ pi, for every row of `observations`, batched on its device."""
    out = []
    for start in range(0, observations.shape[0], batch_size):
        obs = observations[start : start + batch_size]
        obs = obs.unsqueeze(0).expand(num_samples, -1, -1)
        _, log_prob = actor(obs)
        out.append(-log_prob.mean(0))
    return torch.cat(out)


def dataset_soft_returns(actor, log_alpha, observations, data, update, args):
    """Algorithm 2 between its two pretraining phases: the soft returns-to-go (eq. 19) of the whole
    dataset, with the BC actor's entropies and its alpha, frozen from here on."""
    frozen_alpha = float(log_alpha.detach().exp())
    entropies = policy_entropies(actor, observations, args.entropy_samples).cpu().numpy()
    soft_return = soft_mc_returns(data["rewards"], entropies, data["terminations"], data["truncations"], args.gamma, frozen_alpha, args.mc_tail)
    print(
        f"soft returns at update {update}: alpha {frozen_alpha:.4f}, mean entropy {entropies.mean():.3f}, mean soft return {soft_return.mean():.2f}",
        flush=True,
    )
    return soft_return, frozen_alpha


def q_and_diversity(critic, obs, act):
    """Q-values of every member [N, B] and EDAC's ensemble-gradient diversity (An et al. 2021, eq. 4):
    1/(N-1) sum_{i != j} cos(grad_a Q_i, grad_a Q_j), averaged over the batch (= N times the mean
    pairwise cosine; N when all members agree). One forward pass serves both."""
    n = critic.num_critics
    act = act.unsqueeze(0).expand(n, -1, -1).detach().requires_grad_(True)
    q = critic.members(torch.cat([obs.unsqueeze(0).expand(n, -1, -1), act], -1))
    grad = torch.autograd.grad(q.sum(), act, create_graph=True)[0]  # [N, B, A]
    grad = grad / (grad.norm(dim=-1, keepdim=True) + 1e-10)
    cos = torch.einsum("iba,jba->bij", grad, grad)  # [B, N, N]
    off_diagonal = cos.sum((1, 2)) - cos.diagonal(dim1=1, dim2=2).sum(-1)
    return q, off_diagonal.mean() / max(n - 1, 1)


def cql_penalty(critic, obs, q_data, action_low, action_high, n_actions, temperature):
    """CQL gap per critic: T logsumexp_j Q(s, a_j) / T - Q(s, a) over uniform random actions a_j; [N, B]."""
    batch = obs.shape[0]
    low, high = action_low, action_high
    random_actions = low + (high - low) * torch.rand(batch, n_actions, low.shape[0], device=obs.device)
    q_random = critic(obs.unsqueeze(1).expand(-1, n_actions, -1), random_actions)  # [N, B, n_actions]
    return temperature * torch.logsumexp(q_random / temperature, dim=-1) - q_data


def add_cql(loss, weight, critic, actor, obs, q_data, target, args):
    """(loss + weight f CQL, CQL): the CQL gap summed over members, weighted relative to `loss` as in eq. 21,
    f = |loss| / |CQL|, so that `weight` 1 makes both terms equally large whatever the scale of Q. --cql-cap caps f
    where the CQL gradient on one Q-value would exceed the loss's typical one: with `loss` = s sum_i mean_b
    (Q_ib - y_b)^2 (s = 1 or 1/N), that gradient is 2 s |Q - y| and CQL's is f, so f <= 2 |loss| / (N rms)."""
    low, high = actor.action_bias - actor.action_scale, actor.action_bias + actor.action_scale
    cql = cql_penalty(critic, obs, q_data, low, high, args.cql_n_actions, args.cql_temperature).mean(1).sum()
    factor = loss.detach().abs() / (cql.detach().abs() + 1e-8)
    if args.cql_cap:
        rms = (q_data.detach() - target).pow(2).mean().sqrt()
        factor = torch.minimum(factor, 2 * loss.detach().abs() / (q_data.shape[0] * rms + 1e-8))
    return loss + weight * factor * cql, cql, factor


def td_target(actor, critic_target, rew, next_obs, term, alpha, gamma):
    """r + gamma (1 - termination) (min_i Q'_i(s', a') - alpha log pi(a'|s')), a' ~ pi; truncated steps bootstrap."""
    next_act, next_log_prob = actor(next_obs)
    return rew + gamma * (1 - term) * (critic_target(next_obs, next_act).min(0).values - alpha * next_log_prob)


def pretrain_critic_loss(critic, actor, critic_target, batch, alpha, eta, args):
    """Algorithm 2, critic pretraining: MSE of every critic to the soft return (or the eq. 17 blend),
    plus the diversity term so that the ensemble does not collapse onto one function."""
    target = batch["soft_return"]
    if args.td_lambda > 0:  # eq. 17
        with torch.no_grad():
            td = td_target(actor, critic_target, batch["rew"], batch["next_obs"], batch["term"], alpha, args.gamma)
        target = (1 - args.td_lambda) * target + args.td_lambda * td
    q, diversity = q_and_diversity(critic, batch["obs"], batch["act"])
    mc_loss = F.mse_loss(q, target.expand_as(q), reduction="none").mean(1)
    mc_loss = mc_loss.sum() if args.pretrain_mse == "sum" else mc_loss.mean()  # --pretrain-mse
    info = {"losses/critic_mc": mc_loss, "losses/critic_diversity": diversity}
    if args.pretrain_cql_weight > 0:  # --pretrain-cql-weight: pessimism off the data
        mc_loss, info["losses/critic_cql"], info["losses/critic_cql_factor"] = add_cql(
            mc_loss, args.pretrain_cql_weight, critic, actor, batch["obs"], q, target, args
        )
    return mc_loss + eta * diversity, info


def finetune_critic_loss(critic, actor, critic_target, batch, alpha, eta, args):
    """EDAC: MSE of every critic to the soft clipped-ensemble target plus eta times the diversity term."""
    with torch.no_grad():
        q_target = td_target(actor, critic_target, batch["rew"], batch["next_obs"], batch["term"], alpha, args.gamma)
    q, diversity = q_and_diversity(critic, batch["obs"], batch["act"])
    td_loss = F.mse_loss(q, q_target.expand_as(q), reduction="none").mean(1).sum()
    loss, info = td_loss, {}
    if args.cql_weight > 0:  # --cql-weight: keep the ensemble pessimistic off the data
        loss, info["losses/critic_cql"], info["losses/critic_cql_factor"] = add_cql(
            td_loss, args.cql_weight, critic, actor, batch["obs"], q, q_target, args
        )
    return loss + eta * diversity, {
        **info,
        "losses/critic_td": td_loss,
        "losses/critic_diversity": diversity,
        "losses/q_mean": q.mean().detach(),
        "diagnostics/q_data_min": q.detach().min(0).values.mean(),  # pessimism on the data's actions...
        "diagnostics/q_data_std": q.detach().std(0, correction=0).mean(),
    }


def finetune_actor_loss(actor, critic, obs, act, alpha, anchor):
    """SAC actor: alpha log pi(a~|s) - min_i Q_i(s, a~), a~ ~ pi. The --anchor-weight `anchor` adds hard BC of the
    deterministic action, (tanh(mean) - a)^2, weighted against it as in eq. 21 (relative to both magnitudes); anchor 0
    is exactly the SAC loss. The mean, not a~ (as EDAC+BC's BC term): BC of a~ also shrinks the policy's spread, the
    entropy stays far below the target, and the temperature, then Q, run away (docs/RESULTS.md, halfcheetah)."""
    pi, log_prob = actor(obs)
    q_all = critic(obs, pi)
    q_pi = q_all.min(0).values
    sac_loss = (alpha * log_prob - q_pi).mean()
    bc_loss = F.mse_loss(actor(obs, deterministic=True)[0], act)
    loss = sac_loss + anchor * sac_loss.detach().abs() / (bc_loss.detach() + 1e-8) * bc_loss
    info = {"losses/actor": sac_loss, "losses/actor_bc": bc_loss, "losses/entropy": -log_prob.mean().detach()}
    return loss, log_prob.detach(), {**info, **actor_diagnostics(actor, obs, act, q_all)}


@torch.no_grad()
def actor_diagnostics(actor, obs, act, q_all):
    """...and off them: the ensemble on the actor's actions, and how far the actor's deterministic action is
    from the data's (logged every --log-freq; they show whether the critic is pessimistic where the actor goes)."""
    deterministic, _ = actor(obs, deterministic=True)
    return {
        "diagnostics/q_pi_min": q_all.min(0).values.mean(),
        "diagnostics/q_pi_std": q_all.std(0, correction=0).mean(),
        "diagnostics/action_distance": (deterministic - act).square().sum(-1).mean(),
    }


def soft_bc_loss(actor, obs, act, alpha):
    """Soft behaviour cloning (eq. 20): alpha log pi(a~|s) - log pi(a|s), a~ ~ pi."""
    _, log_prob = actor(obs)
    loss = (alpha * log_prob - actor.log_prob(obs, act)).mean()
    return loss, log_prob.detach(), {"losses/actor_soft_bc": loss, "losses/entropy": -log_prob.mean().detach()}


def anchor_weight(args, actor_updates: int) -> float:
    """--anchor-weight after `actor_updates` EDAC actor updates: linear decay to 0 over --anchor-steps (0: none)."""
    if args.anchor_steps == 0:
        return args.anchor_weight
    return args.anchor_weight * max(0.0, 1.0 - actor_updates / args.anchor_steps)


def alpha_loss(log_alpha, log_prob, target_entropy):
    """SAC temperature: raise alpha while the entropy is below the target, lower it above."""
    loss = -(log_alpha * (log_prob + target_entropy)).mean()
    return loss, {"losses/alpha_loss": loss, "charts/alpha": log_alpha.exp().detach()}


def gradient_step(optimizer, loss):
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def temperature_step(log_alpha, log_prob, target_entropy, optimizer, clip: Optional[float]):
    """One alpha update (alpha_loss), then log(alpha) clipped to [-clip, clip] if --log-alpha-clip is set."""
    loss, info = alpha_loss(log_alpha, log_prob, target_entropy)
    gradient_step(optimizer, loss)
    if clip is not None:
        with torch.no_grad():
            log_alpha.clamp_(-clip, clip)
    return info


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
def validation_loss(actor, critic, val, part):
    """The loss of the part being pretrained on the held-out batch: the soft-BC actor's negative log-likelihood of
    the data's actions (eq. 20 without the alpha term, which moves with alpha), or the critics' MSE to the soft return."""
    if part == "actor":
        return -actor.log_prob(val["obs"], val["act"]).mean()
    q = critic(val["obs"], val["act"])
    return F.mse_loss(q, val["soft_return"].expand_as(q))


def auto_pretrain_check(plateau, part, value, update, ends, converged, args: Args, run_dir):
    """Soft BC, then the critics: feeds the validation loss of the part being trained to its utils.Plateau (which
    states the rule); once it has converged, or at its cap (soft BC's: --actor-pretrain-fraction of
    --pretrain-max-steps), the part ends at this update: `ends` (update at which soft BC / all pretraining ends) is
    changed in place. At the end of pretraining the choice is printed and written to config.json."""
    if part not in converged and plateau.update(float(value)):
        converged[part] = update
    if part in converged or update >= ends[part]:
        ends[part] = update
        ends["critic"] = update if args.pretrain_mode == "actor" else ends["critic"]
    if update == ends["critic"]:
        with open(os.path.join(run_dir, "config.json")) as f:
            config = json.load(f)
        config.update(pretrain_steps_chosen=update, pretrain_converged=dict(converged))
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        parts = [part for part in ("actor", "critic") if args.pretrain_mode in ("both", part)]
        how = ", ".join(f"{p} converged at {converged[p]}" if p in converged else f"{p} capped by --pretrain-max-steps" for p in parts)
        print(f"auto pretraining ends at update {update}: {how}", flush=True)


# plumbing
def check_args(args: Args):
    problems = []
    for name in ("total_timesteps", "batch_size", "eval_freq", "eval_episodes", "log_freq", "entropy_samples", "cql_n_actions"):
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
    if not 0.0 <= args.actor_pretrain_fraction <= 1.0:
        problems.append(f"--actor-pretrain-fraction must be in [0, 1] (got {args.actor_pretrain_fraction})")
    if args.num_critics is not None and args.num_critics < 1:
        problems.append(f"--num-critics must be at least 1 (got {args.num_critics})")
    if args.eta is not None and args.eta < 0:
        problems.append(f"--eta must be >= 0 (got {args.eta})")
    if args.pretrain_cql_weight < 0:
        problems.append(f"--pretrain-cql-weight must be >= 0 (got {args.pretrain_cql_weight})")
    if args.cql_weight < 0:
        problems.append(f"--cql-weight must be >= 0 (got {args.cql_weight})")
    if args.cql_temperature <= 0:
        problems.append(f"--cql-temperature must be > 0 (got {args.cql_temperature})")
    if args.anchor_weight < 0:
        problems.append(f"--anchor-weight must be >= 0 (got {args.anchor_weight})")
    if args.anchor_steps < 0:
        problems.append(f"--anchor-steps must be >= 0, 0 = no decay (got {args.anchor_steps})")
    if args.log_alpha_clip is not None and not args.log_alpha_clip > 0:
        problems.append(f"--log-alpha-clip must be > 0 (got {args.log_alpha_clip})")
    if args.critic_warmup_steps < 0:
        problems.append(f"--critic-warmup-steps must be >= 0 (got {args.critic_warmup_steps})")
    if args.initial_alpha <= 0:
        problems.append(f"--initial-alpha must be > 0 (got {args.initial_alpha})")
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
    for added_since in ("pretrain_cql_weight", "cql_weight", "anchor_weight"):  # older runs trained without these terms
        config.setdefault(added_since, 0.0)
    config.setdefault("cql_cap", False)  # nor with the cap
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
    print(f"EDAC num_critics {args.num_critics}, eta {args.eta}, {args.pretrain_steps} pretraining of {args.total_timesteps} updates")

    # ALGO LOGIC: the soft returns-to-go column is filled after soft BC (Algorithm 2, between the two pretraining phases)
    obs_mean, obs_std = utils.state_normalizer(data["observations"], args.normalize_states)
    table, widths = make_table(
        {
            "obs": (data["observations"] - obs_mean) / obs_std,
            "act": data["actions"],
            "rew": data["rewards"],
            "next_obs": (data["next_observations"] - obs_mean) / obs_std,
            "term": data["terminations"],
            "soft_return": np.zeros_like(data["rewards"]),  # the last column
        },
        device,
    )
    obs_dim, act_dim = widths["obs"], widths["act"]
    low, high = dataset.action_space.low.astype(np.float32), dataset.action_space.high.astype(np.float32)
    actor = Actor(obs_dim, act_dim, args.actor_hidden_dims, args.actor_layernorm, low, high, args.bf16, args.layernorm_affine)
    critic = Critic(obs_dim, act_dim, args.critic_hidden_dims, args.critic_layernorm, args.num_critics, args.bf16, args.layernorm_affine)
    actor, critic, critic_target = actor.to(device), critic.to(device), copy.deepcopy(critic).to(device)
    log_alpha = torch.tensor(float(np.log(args.initial_alpha)), device=device, requires_grad=True)
    target_entropy = -float(act_dim)
    fused = device.type in ("cpu", "cuda")
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate, fused=fused)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate, fused=fused)
    alpha_optimizer = torch.optim.Adam([log_alpha], lr=args.learning_rate, fused=fused)
    online_params, target_params = list(critic.parameters()), list(critic_target.parameters())
    compile_fn = torch.compile if args.compile else (lambda fn: fn)
    # The critic losses differentiate twice (diversity term), which torch.compile cannot trace: they stay eager.
    critic_pretrain_fn, bc_fn = pretrain_critic_loss, compile_fn(soft_bc_loss)
    critic_finetune_fn, actor_finetune_fn = finetune_critic_loss, compile_fn(finetune_actor_loss)
    actor_share = {"both": args.actor_pretrain_fraction, "actor": 1.0, "critic": 0.0}[args.pretrain_mode]

    # plumbing: resume, logs, evaluation
    state = dict(actor=actor, critic=critic, critic_target=critic_target, actor_optimizer=actor_optimizer)  # checkpointed
    state.update(critic_optimizer=critic_optimizer, alpha_optimizer=alpha_optimizer)
    ckpt = load_checkpoint(run_dir, state, device) if args.resume else {}
    soft_return, frozen_alpha = ckpt.get("soft_return"), ckpt.get("frozen_alpha")
    if args.resume:  # EDAC's state beyond the modules: alpha, and the soft returns once computed
        log_alpha.data.copy_(ckpt["log_alpha"])
        table[:, -1] = torch.as_tensor(0.0 if soft_return is None else soft_return, dtype=torch.float32, device=device)
    log = utils.RunLog(run_dir, args.total_timesteps, resume=ckpt or None)
    wandb = start_wandb(args, run_dir) if args.track else None
    eval_envs = utils.make_eval_envs(dataset, args.eval_episodes, utils.eval_time_limit(dataset, args.eval_protocol))
    eval_seeds = utils.eval_seeds(args.seed, args.eval_episodes)

    @torch.no_grad()
    def policy(obs):
        return actor(torch.as_tensor(obs, device=device), deterministic=True)[0].cpu().numpy()

    auto = args.pretrain_steps == "auto"  # --pretrain-steps auto: soft BC, then the critics, each until it has converged
    cap = args.pretrain_max_steps if auto else args.pretrain_steps
    ends = {"actor": int(cap * actor_share), "critic": cap}  # where soft BC / pretraining end (auto: decided as it goes)
    ends = ckpt["pretrain_ends"] if auto and "pretrain_ends" in ckpt else ends
    val_rows, train_rows = validation_split(table, args) if auto else (None, None)
    plateaus = {p: utils.Plateau(args.pretrain_tol, args.pretrain_patience, ckpt.get("plateaus", {}).get(p)) for p in ends}
    converged, losses = ckpt.get("converged", {}), {}
    anchor = torch.zeros((), device=device)  # the actor loss's BC weight, refilled every EDAC update
    for global_step in range(ckpt.get("update", 0), args.total_timesteps):
        phase = "pretrain" if global_step < ends["critic"] else "finetune"
        if phase == "pretrain" and global_step >= ends["actor"] and soft_return is None:  # between the phases
            soft_return, frozen_alpha = dataset_soft_returns(actor, log_alpha, table[:, :obs_dim], data, global_step, args)
            table[:, -1] = torch.as_tensor(soft_return, dtype=torch.float32, device=device)
        batch = sample_batch(table, widths, args.batch_size, train_rows if phase == "pretrain" else None)

        # ALGO LOGIC: one update
        if phase == "pretrain" and global_step < ends["actor"]:  # Algorithm 2, actor pretraining
            loss, log_prob, info = bc_fn(actor, batch["obs"], batch["act"], log_alpha.exp().detach())
            losses.update(info)
            gradient_step(actor_optimizer, loss)
            losses.update(temperature_step(log_alpha, log_prob, target_entropy, alpha_optimizer, args.log_alpha_clip))
        elif phase == "pretrain":  # Algorithm 2, critic pretraining: actor and alpha frozen
            loss, info = critic_pretrain_fn(critic, actor, critic_target, batch, frozen_alpha, args.eta, args)
            losses.update(info)
            gradient_step(critic_optimizer, loss)
            soft_update(target_params, online_params, args.tau)
        else:  # EDAC
            alpha = log_alpha.exp().detach()
            actor_updates = global_step - ends["critic"] - args.critic_warmup_steps  # --critic-warmup-steps: critics first
            if actor_updates >= 0 and args.alpha_first:  # --alpha-first: the temperature first, from a fresh sample
                losses.update(temperature_step(log_alpha, actor(batch["obs"])[1].detach(), target_entropy, alpha_optimizer, args.log_alpha_clip))
                alpha = log_alpha.exp().detach()
            if actor_updates >= 0:
                anchor.fill_(anchor_weight(args, actor_updates))  # --anchor-weight (in place: no copy, no sync)
                critic.requires_grad_(False)  # the actor needs dQ/da only, not the critic's weight grads
                loss, log_prob, info = actor_finetune_fn(actor, critic, batch["obs"], batch["act"], alpha, anchor)
                critic.requires_grad_(True)
                losses.update({**info, "charts/anchor_weight": anchor})
                gradient_step(actor_optimizer, loss)
            if actor_updates >= 0 and not args.alpha_first:
                losses.update(temperature_step(log_alpha, log_prob, target_entropy, alpha_optimizer, args.log_alpha_clip))
            loss, info = critic_finetune_fn(critic, actor, critic_target, batch, alpha, args.eta, args)
            losses.update(info)
            gradient_step(critic_optimizer, loss)
            soft_update(target_params, online_params, args.tau)

        # plumbing: the only host syncs are here, every --log-freq updates and at evaluations
        update = global_step + 1
        if auto and phase == "pretrain" and (update % args.log_freq == 0 or update in ends.values()):
            part = "actor" if global_step < ends["actor"] else "critic"
            losses[f"validation/{part}"] = validation_loss(actor, critic, table_rows(table, widths, val_rows), part)
            auto_pretrain_check(plateaus[part], part, losses[f"validation/{part}"], update, ends, converged, args, run_dir)
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
                extra = dict(log_alpha=log_alpha.detach().clone(), soft_return=soft_return, frozen_alpha=frozen_alpha)
                extra.update(pretrain_ends=ends, plateaus={p: q.history for p, q in plateaus.items()}, converged=converged)
                save_checkpoint(run_dir, state, row, args, obs_mean=obs_mean, obs_std=obs_std, **extra)

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
