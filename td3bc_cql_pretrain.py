"""TD3+BC+CQL with supervised pretraining: the hybrid of Appendix G of "Efficient Offline
Reinforcement Learning: First Imitate, then Improve" (Jelley et al.).

td3bc_pretrain.py plus a CQL term on both critics (logsumexp over uniform random actions minus
Q of the data's action), combined with the critic loss by eq. 21 in pretraining and in
finetuning, so that both the actor (BC) and the critics (CQL) stay close to the data.

1. Pretraining (`--pretrain-steps` updates): the actor by behaviour cloning, both critics by MSE
   to the dataset's MC returns-to-go (or eq. 17's blend), targets Polyak-updated.
2. TD3+BC+CQL from that start, for the rest of `--total-timesteps`.

    python td3bc_cql_pretrain.py --env-id pen-human --eval-protocol paper --eval-freq 10000
"""

import copy
import os
from dataclasses import dataclass
from typing import Literal, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import utils


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """name in the run directory"""
    seed: int = 1
    """seed of every RNG and of the evaluation episodes"""
    track: bool = False
    """mirror the run to Weights & Biases (project: $WANDB_PROJECT)"""
    env_id: str = "hopper-medium"
    """a D4RL-style short name (hopper-medium, pen-human, ...) or a Minari id"""
    total_timesteps: Optional[int] = None
    """all gradient updates, pretraining included (None: 300k on Adroit, else 1M)"""
    pretrain_steps: Optional[Union[int, Literal["auto"]]] = None
    """pretraining updates, 0 = none, auto = until converged (None: 200k Adroit, else 50k)"""
    pretrain_mode: Literal["both", "actor", "critic"] = "both"
    """pretrain the actor (BC), the critics (MC returns) or both (Appendix C)"""
    pretrain_max_steps: Optional[int] = None
    """auto: at most this many pretraining updates (None: 2x the fixed length)"""
    batch_size: int = 256
    """transitions per gradient update"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.005
    """Polyak rate of the target networks"""
    learning_rate: float = 3e-4
    """Adam learning rate of actor and critics"""
    hidden_dims: Tuple[int, ...] = (256, 256)
    """hidden layer widths of actor and critics (CORL's TD3+BC)"""
    actor_layernorm: bool = True
    """LayerNorm after every hidden layer of the actor (Appendix B)"""
    critic_layernorm: bool = True
    """LayerNorm after every hidden layer of the critics (Appendix B)"""
    td_lambda: Optional[float] = None
    """eq. 17: target (1 - lambda) MC + lambda TD (None: 0.1 halfcheetah, else 0)"""
    mc_tail: Literal["geometric", "none"] = "geometric"
    """return after a truncated last step: geometric repeats it forever, none adds nothing"""
    mc_max_target: bool = False
    """Appendix F (Q-Transformer): finetuning TD target max(MC return, r + gamma Q')"""
    pretrain_cql_weight: Optional[float] = None
    """weight of the CQL term in critic pretraining, by eq. 21 (None: --cql-weight)"""
    cql_weight: Optional[float] = None
    """weight of the CQL term in finetuning, combined by eq. 21 (None: Table 3's pen 1, else 10)"""
    alpha: Optional[float] = None
    """TD3+BC alpha (None: hopper 10, halfcheetah 20, walker2d 5, pen 1, Adroit 0.1)"""
    policy_frequency: int = 2
    """actor and target updates every this many critic updates (finetuning)"""
    eval_freq: int = 5000
    """evaluate (and checkpoint) every this many updates, and at the end"""
    eval_episodes: int = 10
    """evaluation episodes, run in parallel"""
    eval_protocol: Literal["d4rl", "paper"] = "d4rl"
    """d4rl, or the paper's Adroit protocol (Table 4: time limits, random scores)"""
    final_episodes: int = 100
    """episodes of one last evaluation, a row each in final_returns.csv (0 = none)"""
    capture_video: bool = False
    """each evaluation's first episode to videos/update_<N>.mp4 (MUJOCO_GL=egl)"""
    score_window: Optional[Tuple[int, int]] = None
    """START END: also report the mean score in [START, END] (None: 200k 300k on Adroit)"""
    log_freq: int = 1000
    """log the losses (and check them for NaN) every this many updates"""
    save_model: bool = False
    """checkpoint networks, optimizers and RNGs at every evaluation"""
    resume: Optional[str] = None
    """an interrupted --save-model run's directory, to continue"""
    config: Optional[str] = None
    """a config.json to start from (a run's, or some flags); flags given here win"""
    runs_dir: str = "runs"
    """where run directories are created"""
    compile: bool = True
    """torch.compile the losses"""
    bf16: bool = False
    """bfloat16 hidden layers; outputs, losses and weights stay fp32"""


# ALGO LOGIC: alpha by task: the paper's code (MuJoCo), Table 3 (Adroit)
ALPHA = {"hopper": 10.0, "halfcheetah": 20.0, "walker2d": 5.0, "pen": 1.0}
ALPHA.update(door=0.1, hammer=0.1, relocate=0.1)
TD_LAMBDA = {"halfcheetah": 0.1}  # section 6.2: some TD where MC returns are noisy
POLICY_NOISE = 0.2  # TD3's target smoothing, x the action half-range
NOISE_CLIP = 0.5
CQL_ACTIONS = 10  # random actions in the CQL logsumexp (Table 3)
CQL_WEIGHT = {"pen": 1.0}  # Table 3, else 10


def resolve_defaults(args: Args):
    """The task's defaults for the fields left None (utils.fill_defaults adds the budget)."""
    task = utils.task_of(utils.resolve_dataset_id(args.env_id))
    cql_weight = CQL_WEIGHT.get(task, 10.0)
    defaults = dict(td_lambda=TD_LAMBDA.get(task, 0.0), alpha=ALPHA.get(task, 2.5))
    pretrain_cql_weight = cql_weight if args.cql_weight is None else args.cql_weight
    defaults.update(cql_weight=cql_weight, pretrain_cql_weight=pretrain_cql_weight)
    return utils.fill_defaults(args, task, **defaults)


# ALGO LOGIC: networks (LayerNorm without scale and shift, as the paper's code)
def hidden_precision(x, bf16: bool):
    """--bf16: hidden layers in bfloat16 autocast; the output layer runs in fp32."""
    return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16)


def mlp(in_dim, hidden_dims, out_dim, layernorm):
    layers = []
    for h in hidden_dims:
        norm = [nn.LayerNorm(h, elementwise_affine=False)] if layernorm else []
        layers += [nn.Linear(in_dim, h), *norm, nn.ReLU()]
        in_dim = h
    return nn.Sequential(*layers, nn.Linear(in_dim, out_dim))


class Actor(nn.Module):
    """Deterministic policy, tanh-squashed into the action box."""

    def __init__(self, obs_dim, act_dim, hidden_dims, layernorm, low, high, bf16=False):
        super().__init__()
        self.bf16 = bf16
        self.net = mlp(obs_dim, hidden_dims, act_dim, layernorm)
        self.register_buffer("scale", torch.as_tensor((high - low) / 2, dtype=torch.float32))
        self.register_buffer("bias", torch.as_tensor((high + low) / 2, dtype=torch.float32))

    def forward(self, obs):
        with hidden_precision(obs, self.bf16):
            hidden = self.net[:-1](obs)
        return torch.tanh(self.net[-1](hidden.float())) * self.scale + self.bias


class VectorizedLinear(nn.Module):
    """N Linear layers as one batched matmul: [n, B, in] -> [n, B, out]."""

    def __init__(self, in_dim, out_dim, num_members):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_dim))
        bound = 1 / in_dim**0.5  # nn.Linear's default init, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return torch.baddbmm(self.bias[: x.shape[0]], x, self.weight[: x.shape[0]])


class Critic(nn.Module):
    """Both Q-functions as one batched module: Q(s, a) -> [2, *batch]."""

    def __init__(self, obs_dim, act_dim, hidden_dims, layernorm, num_critics=2, bf16=False):
        super().__init__()
        self.bf16 = bf16
        self.layernorm = layernorm
        self.num_critics = num_critics
        dims = [obs_dim + act_dim, *hidden_dims, 1]
        linears = [VectorizedLinear(i, o, num_critics) for i, o in zip(dims[:-1], dims[1:])]
        self.linears = nn.ModuleList(linears)

    def forward(self, obs, act, n=None):
        """Q of the first n critics (default: all): [n, *batch]."""
        n = n or self.num_critics
        x = torch.cat([obs, act], -1)
        h = x.reshape(1, -1, x.shape[-1]).expand(n, -1, -1)
        with hidden_precision(h, self.bf16):
            for linear in self.linears[:-1]:
                h = linear(h)
                h = F.relu(F.layer_norm(h, h.shape[-1:]) if self.layernorm else h)
        return self.linears[-1](h.float()).reshape(n, *x.shape[:-1])


# ALGO LOGIC: returns
def mc_returns(rewards, terminations, truncations, gamma, tail="geometric"):
    """Discounted return-to-go R_t = sum_n gamma^n r_{t+n} of flat arrays of many episodes.
    Per episode, from its last step T:
        R_T = r_T                  it terminates at T
        R_T = r_T / (1 - gamma)    truncated at T, or the data ends: the tail is unknown;
                                   `geometric` repeats r_T forever, `none` takes R_T = r_T
        R_t = r_t + gamma R_{t+1}  inside the episode
    A log-depth scan of y_t = b_t + a_t y_{t+1}, no loop over steps.
    """
    r = np.asarray(rewards, np.float64)
    term = np.asarray(terminations, bool)
    end = term | np.asarray(truncations, bool)
    if r.size == 0:
        return r
    end[-1] = True
    truncated = end & ~term
    if tail == "geometric" and truncated.any():  # no truncated end (gamma 1 too): no tail
        if gamma >= 1:
            raise ValueError(
                f"tail 'geometric' needs gamma < 1: {int(truncated.sum())} episode(s) end "
                "truncated, where the tail gamma / (1 - gamma) diverges; use tail 'none'"
            )
        b = np.where(truncated, r / (1 - gamma), r)
    elif tail in ("geometric", "none"):
        b = r.copy()
    else:
        raise ValueError(f"unknown tail '{tail}': use 'geometric' or 'none'")
    a = np.where(end, 0.0, gamma)
    shift = 1
    while shift < r.size:  # compose with the map `shift` steps ahead (a = 0 past episode ends)
        b[:-shift] += a[:-shift] * b[shift:]
        a[:-shift] *= a[shift:]
        a[-shift:] = 0.0
        shift *= 2
    return b


# ALGO LOGIC: losses
def cql_gap(critic, actor, obs, q):
    """CQL gap logsumexp_j Q(s, a_j) - Q(s, a), a_j uniform, summed over critics."""
    low = actor.bias - actor.scale
    high = actor.bias + actor.scale
    shape = (obs.shape[0], CQL_ACTIONS, low.shape[0])
    random_act = low + (high - low) * torch.rand(shape, device=obs.device)
    q_random = critic(obs.unsqueeze(1).expand(-1, CQL_ACTIONS, -1), random_act)  # [2, B, K]
    return (torch.logsumexp(q_random, -1) - q).mean(1).sum()


def combine_losses(primary, auxiliary, weight):
    """Eq. 21 with |.| the detached magnitude (the paper's code divides by the signed value)."""
    primary = primary / (primary.detach().abs() + 1e-8)
    return primary + weight * auxiliary / (auxiliary.detach().abs() + 1e-8)


def td_target(actor_target, critic_target, batch, gamma):
    """r + gamma (1 - term) min_i Q'_i(s', a~'), a~' smoothed by clipped noise."""
    scale = actor_target.scale
    bias = actor_target.bias
    noise = (torch.randn_like(batch["act"]) * POLICY_NOISE).clamp(-NOISE_CLIP, NOISE_CLIP)
    next_act = actor_target(batch["next_obs"]) + noise * scale
    next_act = torch.clamp(next_act, bias - scale, bias + scale)
    q_next = critic_target(batch["next_obs"], next_act).min(0).values
    return batch["rew"] + gamma * (1 - batch["term"]) * q_next


def pretrain_critic_loss(critic, actor_target, critic_target, batch, gamma, td_lambda, cql_weight):
    """Algorithm 1: both critics' MSE to the MC return (or eq. 17's blend), [+ CQL]."""
    target = batch["mc_return"]
    if td_lambda > 0:  # eq. 17
        with torch.no_grad():
            td = td_target(actor_target, critic_target, batch, gamma)
            target = (1 - td_lambda) * target + td_lambda * td
    q = critic(batch["obs"], batch["act"])
    mc_loss = (q - target).pow(2).mean(1).sum()
    info = {"losses/critic_mc": mc_loss}
    if cql_weight > 0:  # section 5.2: value regularization in pretraining
        cql = cql_gap(critic, actor_target, batch["obs"], q)
        return combine_losses(mc_loss, cql, cql_weight), {**info, "losses/critic_cql": cql}
    return mc_loss, info


def critic_loss(critic, actor_target, critic_target, batch, gamma, mc_max_target, cql_weight):
    """TD3 + CQL: MSE of both critics to the clipped double-Q target (Appendix F: max with MC),
    plus the CQL gap of both critics, combined by eq. 21."""
    with torch.no_grad():
        q_target = td_target(actor_target, critic_target, batch, gamma)
        if mc_max_target:
            q_target = torch.maximum(q_target, batch["mc_return"])
    q = critic(batch["obs"], batch["act"])
    td_loss = (q - q_target).pow(2).mean(1).sum()
    cql = cql_gap(critic, actor_target, batch["obs"], q)
    loss = combine_losses(td_loss, cql, cql_weight)
    info = {"losses/critic_td": td_loss, "losses/critic_cql": cql}
    return loss, {**info, "losses/q_mean": q.mean().detach()}


def actor_loss(actor, critic, obs, act, alpha):
    """TD3+BC: -lambda Q1(s, pi(s)) + (pi(s) - a)^2, lambda = alpha / mean|Q1| (detached)."""
    pi = actor(obs)
    q_pi = critic(obs, pi, n=1)[0]
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
    """Polyak averaging: target += tau (online - target), one fused call."""
    torch._foreach_lerp_(target_params, online_params, tau)


# plumbing: --pretrain-steps auto (until both held-out losses converge)
@torch.no_grad()
def auto_pretrain(actor, critic, val, plateaus, converged, update, args, run_dir):
    """Held-out losses, fed to utils.Plateau; returns them and where pretraining ends."""
    values = {}
    if "actor" in plateaus:
        values["actor"] = F.mse_loss(actor(val["obs"]), val["act"])
    if "critic" in plateaus:
        values["critic"] = (critic(val["obs"], val["act"]) - val["mc_return"]).pow(2).mean()
    for part, value in values.items():
        if part not in converged and plateaus[part].update(float(value)):
            converged[part] = update
    end = args.pretrain_max_steps
    if len(converged) == len(values) or update >= end:
        utils.report_auto_pretraining(run_dir, update, converged, list(values))
        end = update
    return {f"validation/{part}": value for part, value in values.items()}, end


def main(args: Args):
    script = os.path.basename(__file__)
    args = utils.read_config(args.resume, Args, script) if args.resume else resolve_defaults(args)
    rules = {"policy_frequency": "at least 1", "alpha": ">= 0", "pretrain_cql_weight": ">= 0"}
    rules["cql_weight"] = ">= 0"
    utils.check_args(args, rules)
    dataset, data, ref, run_dir, device = utils.start_run(args, script)
    cql = f"CQL {args.cql_weight} (pretraining {args.pretrain_cql_weight})"
    print(f"TD3+BC+CQL: alpha {args.alpha}, {cql}; {args.pretrain_steps} pretraining updates")

    # ALGO LOGIC: the dataset's returns-to-go, once (Algorithm 1, first loop)
    ends = (data["terminations"], data["truncations"])
    mc_return = mc_returns(data["rewards"], *ends, args.gamma, args.mc_tail)
    obs_mean, obs_std = utils.state_normalizer(data["observations"])
    normalize = lambda obs: (obs - obs_mean) / obs_std
    fields = dict(obs=normalize(data["observations"]), act=data["actions"], rew=data["rewards"])
    fields.update(next_obs=normalize(data["next_observations"]), term=data["terminations"])
    table, widths = utils.make_table({**fields, "mc_return": mc_return}, device)
    obs_dim = widths["obs"]
    act_dim = widths["act"]
    low = dataset.action_space.low.astype(np.float32)
    high = dataset.action_space.high.astype(np.float32)
    actor = Actor(obs_dim, act_dim, args.hidden_dims, args.actor_layernorm, low, high, args.bf16)
    critic = Critic(obs_dim, act_dim, args.hidden_dims, args.critic_layernorm, bf16=args.bf16)
    actor.to(device)
    critic.to(device)
    actor_target = copy.deepcopy(actor)
    critic_target = copy.deepcopy(critic)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate, fused=True)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate, fused=True)
    online_params = list(actor.parameters()) + list(critic.parameters())
    target_params = list(actor_target.parameters()) + list(critic_target.parameters())
    compiled = torch.compile if args.compile else (lambda fn: fn)
    pretrain_critic_fn = compiled(pretrain_critic_loss)
    bc_fn = compiled(bc_loss)
    critic_fn = compiled(critic_loss)
    actor_fn = compiled(actor_loss)

    # plumbing: resume, logs, evaluation
    state = dict(actor=actor, critic=critic, actor_target=actor_target, critic_target=critic_target)
    state.update(actor_optimizer=actor_optimizer, critic_optimizer=critic_optimizer)
    ckpt = utils.load_checkpoint(run_dir, state, device) if args.resume else {}
    log = utils.RunLog(run_dir, args, ckpt or None)
    envs = utils.make_eval_envs(dataset, args, render=args.capture_video)

    @torch.no_grad()
    def policy(obs):
        obs = torch.as_tensor(normalize(obs).astype(np.float32), device=device)
        return actor(obs).cpu().numpy()

    # plumbing: --pretrain-steps auto holds out rows and watches their losses
    use_auto = args.pretrain_steps == "auto"
    val_rows, train_rows = utils.validation_split(table, args.seed) if use_auto else (None, None)
    parts = [p for p in ("actor", "critic") if args.pretrain_mode in ("both", p)]
    plateaus = {p: utils.Plateau(history=ckpt.get("plateaus", {}).get(p)) for p in parts}
    converged = ckpt.get("converged", {})
    pretrain_end = args.pretrain_max_steps if use_auto else args.pretrain_steps
    pretrain_end = ckpt.get("pretrain_end", pretrain_end)
    losses = {}
    for global_step in range(ckpt.get("update", 0), args.total_timesteps):
        phase = "pretrain" if global_step < pretrain_end else "finetune"
        rows = train_rows if phase == "pretrain" else None
        batch = utils.sample_batch(table, widths, args.batch_size, rows)

        # ALGO LOGIC: one update
        if phase == "pretrain":  # Algorithm 1, second loop
            if "critic" in parts:
                loss, info = pretrain_critic_fn(
                    critic,
                    actor_target,
                    critic_target,
                    batch,
                    args.gamma,
                    args.td_lambda,
                    args.pretrain_cql_weight,
                )
                gradient_step(critic_optimizer, loss)
                losses.update(info)
            if "actor" in parts:
                loss, info = bc_fn(actor, batch["obs"], batch["act"])
                gradient_step(actor_optimizer, loss)
                losses.update(info)
            soft_update(target_params, online_params, args.tau)
        else:  # TD3+BC+CQL
            loss, info = critic_fn(
                critic,
                actor_target,
                critic_target,
                batch,
                args.gamma,
                args.mc_max_target,
                args.cql_weight,
            )
            gradient_step(critic_optimizer, loss)
            losses.update(info)
            if global_step % args.policy_frequency == 0:
                critic.requires_grad_(False)  # the actor needs dQ/da only
                loss, info = actor_fn(actor, critic, batch["obs"], batch["act"], args.alpha)
                critic.requires_grad_(True)
                gradient_step(actor_optimizer, loss)
                soft_update(target_params, online_params, args.tau)
                losses.update(info)

        # plumbing: the only host syncs, every --log-freq updates and at evaluations
        update = global_step + 1
        is_log = update % args.log_freq == 0
        if use_auto and phase == "pretrain" and (is_log or update == pretrain_end):
            val = utils.table_rows(table, widths, val_rows)
            info, pretrain_end = auto_pretrain(
                actor, critic, val, plateaus, converged, update, args, run_dir
            )
            losses.update(info)
        is_eval = update % args.eval_freq == 0 or update == args.total_timesteps
        if is_log or is_eval:
            log.losses(losses, update, phase, [pretrain_end])  # raises on NaN/inf
            losses.clear()
        if is_eval:
            row = log.evaluation(update, phase, policy, envs, ref)
            if args.save_model:
                extra = dict(obs_mean=obs_mean, obs_std=obs_std, pretrain_end=pretrain_end)
                extra.update(converged=converged)
                extra["plateaus"] = {p: q.history for p, q in plateaus.items()}
                utils.save_checkpoint(run_dir, state, row, args, **extra)

    utils.final_evaluation(policy, dataset, args, ref, run_dir)
    envs.close()
    log.finish(args.score_window)
    return run_dir


if __name__ == "__main__":
    utils.cli(main, Args)
