"""EDAC+BC with soft supervised pretraining: the hybrid of Appendix G of "Efficient Offline
Reinforcement Learning: First Imitate, then Improve" (Jelley et al.).

edac_pretrain.py plus hard behaviour cloning in the EDAC actor loss: the MSE between the
sampled action and the data's, combined with the SAC loss by eq. 21, so that the actor stays
on the data while the ensemble keeps the critics pessimistic off it. Soft BC still pretrains.

1. Soft behaviour cloning of the tanh-Gaussian actor, alpha auto-tuned (eq. 20).
2. Soft returns-to-go of the dataset with the BC actor's entropies, alpha frozen (eq. 19).
3. The N critics fitted to them by MSE plus EDAC's diversity term.
4. EDAC+BC for the rest of `--total-timesteps`.

    python edac_bc_pretrain.py --env-id pen-human --eval-protocol paper --eval-freq 10000
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
    """pretrain the actor (soft BC), the critics (soft returns) or both (Appendix C)"""
    pretrain_max_steps: Optional[int] = None
    """auto: at most this many pretraining updates (None: 2x the fixed length)"""
    actor_pretrain_fraction: float = 0.5
    """share of the pretraining updates spent on soft BC; the rest fits the critics"""
    batch_size: int = 256
    """transitions per gradient update"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.005
    """Polyak rate of the target critics"""
    learning_rate: float = 3e-4
    """Adam learning rate of actor, critics and alpha"""
    hidden_dims: Tuple[int, ...] = (256, 256, 256)
    """hidden layer widths of actor and critics (EDAC's; TD3+BC's differ on purpose)"""
    actor_layernorm: bool = True
    """LayerNorm after every hidden layer of the actor (Appendix B)"""
    critic_layernorm: bool = True
    """LayerNorm after every hidden layer of the critics (Appendix B)"""
    td_lambda: Optional[float] = None
    """eq. 17: target (1 - lambda) MC + lambda TD (None: 0.1 halfcheetah, walker2d; else 0)"""
    mc_tail: Literal["geometric", "none"] = "geometric"
    """return after a truncated last step: geometric repeats it forever, none adds nothing"""
    num_critics: Optional[int] = None
    """ensemble size N (None: hopper 50, pen 20, door/hammer/relocate 50, else 10)"""
    eta: Optional[float] = None
    """weight of the diversity term (None: 1; pen-human 1000, pen-cloned 10, Adroit 200)"""
    bc_weight: float = 1.0
    """weight of the hard BC term in the actor loss, combined by eq. 21 (Table 3: 1)"""
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


# ALGO LOGIC: per-task defaults (An et al. 2021 / CORL for MuJoCo; the paper's Table 3 for Adroit)
NUM_CRITICS = {"hopper": 50, "pen": 20, "door": 50, "hammer": 50, "relocate": 50}
ETA = {"pen": 200.0, "door": 200.0, "hammer": 200.0, "relocate": 200.0}
ETA_BY_LEVEL = {("pen", "human"): 1000.0, ("pen", "cloned"): 10.0}
# section 6.2: some TD where MC returns are noisiest
TD_LAMBDA = {"halfcheetah": 0.1, "walker2d": 0.1}
ENTROPY_SAMPLES = 10  # actions sampled per state for the BC actor's entropy in eq. 19


def resolve_defaults(args: Args):
    """The task's defaults for the fields left None (utils.fill_defaults adds the budget)."""
    task = utils.task_of(utils.resolve_dataset_id(args.env_id))
    levels = [v for (t, level), v in ETA_BY_LEVEL.items() if t == task and level in args.env_id]
    eta = levels[0] if levels else ETA.get(task, 1.0)
    defaults = dict(td_lambda=TD_LAMBDA.get(task, 0.0), num_critics=NUM_CRITICS.get(task, 10))
    return utils.fill_defaults(args, task, eta=eta, **defaults)


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
    """Tanh-squashed Gaussian policy in the action box; log-std clipped to [-5, 2]."""

    def __init__(self, obs_dim, act_dim, hidden_dims, layernorm, low, high, bf16=False):
        super().__init__()
        self.bf16 = bf16
        self.net = mlp(obs_dim, hidden_dims, 2 * act_dim, layernorm)
        nn.init.uniform_(self.net[-1].weight, -1e-3, 1e-3)  # CORL's EDAC head init
        nn.init.uniform_(self.net[-1].bias, -1e-3, 1e-3)
        self.register_buffer("scale", torch.as_tensor((high - low) / 2, dtype=torch.float32))
        self.register_buffer("bias", torch.as_tensor((high + low) / 2, dtype=torch.float32))

    def dist(self, obs):
        with hidden_precision(obs, self.bf16):
            hidden = self.net[:-1](obs)
        mu, log_std = self.net[-1](hidden.float()).chunk(2, -1)
        return mu, log_std.clamp(-5.0, 2.0).exp()

    def squashed_log_prob(self, u, mu, std):
        """log pi(a) for a = tanh(u) scale + bias; log(1 - tanh(u)^2) in a stable softplus form."""
        log_prob = torch.distributions.Normal(mu, std).log_prob(u)
        log_prob = log_prob - 2 * (np.log(2) - u - F.softplus(-2 * u)) - torch.log(self.scale)
        return log_prob.sum(-1)

    def forward(self, obs, deterministic: bool = False):
        """(action, log pi(action | obs)); the deterministic action is tanh(mean)."""
        mu, std = self.dist(obs)
        u = mu if deterministic else mu + std * torch.randn_like(mu)
        return torch.tanh(u) * self.scale + self.bias, self.squashed_log_prob(u, mu, std)

    def log_prob(self, obs, act):
        """log pi(a | s) of dataset actions: atanh of the action clipped inside (-1, 1)."""
        mu, std = self.dist(obs)
        y = ((act - self.bias) / self.scale).clamp(-1 + 1e-6, 1 - 1e-6)
        return self.squashed_log_prob(torch.atanh(y), mu, std)


class VectorizedLinear(nn.Module):
    """N independent Linear layers as one batched matmul: [N, B, in] -> [N, B, out]."""

    def __init__(self, in_dim, out_dim, num_members):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_dim))
        bound = 1 / in_dim**0.5  # nn.Linear's default init, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return torch.baddbmm(self.bias, x, self.weight)


def layer_norm(x):
    """LayerNorm without scale and shift: (normalized x, 1 / std), the latter for dQ/da."""
    centered = x - x.mean(-1, keepdim=True)
    rstd = torch.rsqrt(centered.square().mean(-1, keepdim=True) + 1e-5)
    return centered * rstd, rstd


class Critic(nn.Module):
    """`num_critics` Q-functions as one batched module: Q(s, a) -> [num_critics, *batch]."""

    def __init__(self, obs_dim, act_dim, hidden_dims, layernorm, num_critics, bf16=False):
        super().__init__()
        self.bf16 = bf16
        self.layernorm = layernorm
        self.num_critics = num_critics
        dims = [obs_dim + act_dim, *hidden_dims, 1]
        linears = [VectorizedLinear(i, o, num_critics) for i, o in zip(dims[:-1], dims[1:])]
        self.linears = nn.ModuleList(linears)
        with torch.no_grad():  # CORL's EDAC init: hidden biases 0.1, small output layer
            for linear in self.linears[:-1]:
                linear.bias.fill_(0.1)
            self.linears[-1].weight.uniform_(-3e-3, 3e-3)
            self.linears[-1].bias.uniform_(-3e-3, 3e-3)

    def forward(self, obs, act):
        """Every member on the same inputs: [N, *batch]."""
        x = torch.cat([obs, act], -1)
        members = x.reshape(1, -1, x.shape[-1]).expand(self.num_critics, -1, -1)
        return self.members(members).reshape(self.num_critics, *x.shape[:-1])

    def members(self, x, act_dim: int = 0):
        """Member i on x[i]: [N, B, obs + act] -> Q [N, B]; with `act_dim`, also dQ_i/da
        [N, B, act_dim], backpropagated by hand: a loss on it is then differentiated once (not
        twice, as autograd.grad(create_graph=True) would), which torch.compile can fuse."""
        saved = []
        with hidden_precision(x, self.bf16):
            for linear in self.linears[:-1]:
                x, rstd = layer_norm(linear(x)) if self.layernorm else (linear(x), None)
                saved.append((x, rstd))
                x = F.relu(x)
        q = self.linears[-1](x.float()).squeeze(-1)
        if not act_dim:
            return q
        grad = self.linears[-1].weight.transpose(1, 2)  # dQ/dh of the last hidden layer
        with hidden_precision(grad, self.bf16):
            for i in reversed(range(len(saved))):
                x, rstd = saved[i]
                # the ReLU's mask; a bool mask is ~30x slower compiled on CPU
                grad = grad * F.relu(x).sign()
                if rstd is not None:
                    centered = grad - grad.mean(-1, keepdim=True)
                    grad = rstd * (centered - x * (grad * x).mean(-1, keepdim=True))
                weight = self.linears[i].weight[:, -act_dim:] if i == 0 else self.linears[i].weight
                grad = grad @ weight.transpose(1, 2)
        return q, grad.float()


# ALGO LOGIC: returns
def soft_mc_returns(rewards, entropies, terminations, truncations, gamma, alpha, tail="geometric"):
    """Soft return-to-go (eq. 19): R_t = sum_n gamma^n r_{t+n} + alpha sum_{n>=1} gamma^n H(s_{t+n})
    of flat arrays of many episodes; entropies[t] = H(pi(.|s_t)). Per episode, from its end T:
        R_T = r_T                                            it terminates at T
        R_T = r_T + gamma / (1 - gamma) (r_T + alpha H(s_T))  truncated at T (or the data ends):
                                                             `geometric` repeats the last step,
                                                             `none` takes R_T = r_T
        R_t = r_t + gamma (alpha H(s_{t+1}) + R_{t+1})       inside the episode
    A log-depth scan of y_t = b_t + a_t y_{t+1}, no Python loop over steps (tests: the plain loop).
    """
    r = np.asarray(rewards, dtype=np.float64)
    h = np.asarray(entropies, dtype=np.float64)
    term = np.asarray(terminations, dtype=bool)
    end = term | np.asarray(truncations, dtype=bool)
    if r.size == 0:
        return r
    end[-1] = True
    b = np.where(end, r, r + gamma * alpha * np.append(h[1:], 0.0))
    truncated = end & ~term
    if tail == "geometric" and truncated.any():  # with no truncated end (gamma 1 included) no tail
        if gamma >= 1:
            raise ValueError(
                f"tail 'geometric' needs gamma < 1: {int(truncated.sum())} episode(s) end "
                "truncated, where the tail gamma / (1 - gamma) diverges; use tail 'none'"
            )
        b = np.where(truncated, r + gamma / (1 - gamma) * (r + alpha * h), b)
    elif tail not in ("geometric", "none"):
        raise ValueError(f"unknown tail '{tail}': use 'geometric' or 'none'")
    a = np.where(end, 0.0, gamma)
    shift = 1
    while shift < r.size:  # compose with the map `shift` steps ahead (a = 0 past episode ends)
        b[:-shift] += a[:-shift] * b[shift:]
        a[:-shift] *= a[shift:]
        a[-shift:] = 0.0
        shift *= 2
    return b


@torch.no_grad()
def dataset_soft_returns(actor, alpha, obs, data, args, chunk=65536):
    """Between the two pretraining phases: eq. 19 for the whole dataset, with the BC actor's
    entropies H(s) ~ -mean_k log pi(a_k|s), a_k ~ pi, batched on the device."""
    entropies = []
    for start in range(0, obs.shape[0], chunk):
        rows = obs[start : start + chunk].expand(ENTROPY_SAMPLES, -1, -1)
        entropies.append(-actor(rows)[1].mean(0))
    entropies = torch.cat(entropies).cpu().numpy()
    ends = (data["terminations"], data["truncations"])
    returns = soft_mc_returns(data["rewards"], entropies, *ends, args.gamma, alpha, args.mc_tail)
    stats = f"mean entropy {entropies.mean():.3f}, mean {returns.mean():.2f}"
    print(f"soft returns: alpha {alpha:.4f}, {stats}", flush=True)
    return returns


# ALGO LOGIC: losses
def q_and_diversity(critic, obs, act):
    """Q of every member [N, B] and EDAC's diversity term (An et al. 2021, eq. 4): 1/(N-1)
    sum_{i != j} cos(grad_a Q_i, grad_a Q_j), averaged over the batch. One forward for both."""
    n = critic.num_critics
    q, grad = critic.members(
        torch.cat([obs, act], -1).expand(n, -1, -1), act.shape[-1]
    )  # [N, B], [N, B, A]
    grad = grad / (
        grad.norm(dim=-1, keepdim=True) + 1e-10
    )  # sum_{i != j} g_i . g_j, per transition:
    off_diagonal = grad.sum(0).square().sum(-1) - grad.square().sum((0, 2))  # |sum g|^2 - sum |g|^2
    return q, off_diagonal.mean() / max(n - 1, 1)


def td_target(actor, critic_target, batch, alpha, gamma):
    """r + gamma (1 - term) (min_i Q'_i(s', a') - alpha log pi(a'|s')), a' ~ pi."""
    next_act, next_log_prob = actor(batch["next_obs"])
    q_next = critic_target(batch["next_obs"], next_act).min(0).values - alpha * next_log_prob
    return batch["rew"] + gamma * (1 - batch["term"]) * q_next


def pretrain_critic_loss(critic, actor, critic_target, batch, alpha, eta, gamma, td_lambda):
    """Algorithm 2: MSE of the critics to the soft return (or eq. 17's blend), averaged over
    members (as the paper's code), plus eta times the diversity term."""
    target = batch["soft_return"]
    if td_lambda > 0:  # eq. 17
        with torch.no_grad():
            td = td_target(actor, critic_target, batch, alpha, gamma)
            target = (1 - td_lambda) * target + td_lambda * td
    q, diversity = q_and_diversity(critic, batch["obs"], batch["act"])
    mc_loss = (q - target).pow(2).mean()
    info = {"losses/critic_mc": mc_loss, "losses/critic_diversity": diversity}
    return mc_loss + eta * diversity, info


def critic_loss(critic, actor, critic_target, batch, alpha, eta, gamma):
    """EDAC: MSE of every critic to the soft clipped-ensemble target, summed over members,
    plus eta times the diversity term."""
    with torch.no_grad():
        q_target = td_target(actor, critic_target, batch, alpha, gamma)
    q, diversity = q_and_diversity(critic, batch["obs"], batch["act"])
    td_loss = (q - q_target).pow(2).mean(1).sum()
    info = {"losses/critic_td": td_loss, "losses/critic_diversity": diversity}
    info["losses/q_mean"] = q.detach().mean()
    info.update(ensemble_stats(q.detach(), "q_data"))  # the ensemble on the data's actions...
    return td_loss + eta * diversity, info


@torch.no_grad()
def ensemble_stats(q, name):
    """Diagnostics: the ensemble's minimum and its spread over members, averaged over the batch."""
    return {
        f"diagnostics/{name}_min": q.min(0).values.mean(),
        f"diagnostics/{name}_std": q.std(0, correction=0).mean(),
    }


def combine_losses(primary, auxiliary, weight):
    """Eq. 21 with |.| the detached magnitude (the paper's code divides by the signed value)."""
    primary = primary / (primary.detach().abs() + 1e-8)
    return primary + weight * auxiliary / (auxiliary.detach().abs() + 1e-8)


def actor_loss(actor, critic, obs, act, alpha, bc_weight):
    """SAC actor alpha log pi(a~|s) - min_i Q_i(s, a~), a~ ~ pi, plus hard BC (a~ - a)^2, by
    eq. 21."""
    pi, log_prob = actor(obs)
    q_pi = critic(obs, pi)
    sac_loss = (alpha * log_prob - q_pi.min(0).values).mean()
    bc_loss = F.mse_loss(pi, act)
    loss = combine_losses(sac_loss, bc_loss, bc_weight)
    with torch.no_grad():  # ...and on the actor's, and how far those are from the data's
        distance = (actor(obs, deterministic=True)[0] - act).square().sum(-1).mean()
        info = {**ensemble_stats(q_pi, "q_pi"), "diagnostics/action_distance": distance}
    info["losses/entropy"] = -log_prob.mean()
    return loss, {**info, "losses/actor": sac_loss, "losses/actor_bc": bc_loss}


def soft_bc_loss(actor, obs, act, alpha):
    """Soft behaviour cloning (eq. 20): alpha log pi(a~|s) - log pi(a|s), a~ ~ pi."""
    _, log_prob = actor(obs)
    loss = (alpha * log_prob - actor.log_prob(obs, act)).mean()
    return loss, {"losses/actor_soft_bc": loss, "losses/entropy": -log_prob.mean().detach()}


def temperature_step(actor, obs, log_alpha, optimizer):
    """SAC temperature on a fresh sample: raise alpha while the entropy is below -|A|, lower it
    above; log alpha kept in [-10, 10] (the paper's code)."""
    with torch.no_grad():
        log_prob = actor(obs)[1]
    loss = -(log_alpha * (log_prob - actor.scale.shape[0])).mean()  # target entropy -|A|
    gradient_step(optimizer, loss)
    with torch.no_grad():
        log_alpha.clamp_(-10.0, 10.0)
    alpha = log_alpha.exp().detach()
    return alpha, {"losses/alpha_loss": loss, "charts/alpha": alpha}


def gradient_step(optimizer, loss):
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


@torch.no_grad()
def soft_update(target_params, online_params, tau):
    """Polyak averaging: target += tau (online - target), one fused call."""
    torch._foreach_lerp_(target_params, online_params, tau)


# plumbing: --pretrain-steps auto (soft BC, then the critics, each until its held-out loss
# converges)
@torch.no_grad()
def auto_pretrain(actor, critic, val, part, plateau, ends, converged, update, args, run_dir):
    """Soft BC: the NLL of the held-out actions (eq. 20 without alpha); critics: their MSE to the
    soft return. Fed to the part's utils.Plateau, it ends the part here once converged or at
    its cap: `ends` (where soft BC / all pretraining end) changes in place. Returns the loss."""
    if part == "actor":
        value = -actor.log_prob(val["obs"], val["act"]).mean()
    else:
        value = (critic(val["obs"], val["act"]) - val["soft_return"]).pow(2).mean()
    if part not in converged and plateau.update(float(value)):
        converged[part] = update
    if part in converged or update >= ends[part]:
        ends[part] = update
        ends["critic"] = update if args.pretrain_mode == "actor" else ends["critic"]
    if update == ends["critic"]:
        parts = [p for p in ("actor", "critic") if args.pretrain_mode in ("both", p)]
        utils.report_auto_pretraining(run_dir, update, converged, parts)
    return value


def main(args: Args):
    script = os.path.basename(__file__)
    args = utils.read_config(args.resume, Args, script) if args.resume else resolve_defaults(args)
    rules = {"num_critics": "at least 1", "eta": ">= 0", "actor_pretrain_fraction": "in [0, 1]"}
    rules["bc_weight"] = ">= 0"
    utils.check_args(args, rules)
    dataset, data, ref, run_dir, device = utils.start_run(args, script)
    bc = f"BC {args.bc_weight}; {args.pretrain_steps} pretraining"
    print(f"EDAC+BC: {args.num_critics} critics, eta {args.eta}, {bc}")

    # ALGO LOGIC: the soft returns column is filled after soft BC (between Algorithm 2's phases)
    obs_mean, obs_std = utils.state_normalizer(data["observations"])
    normalize = lambda obs: (obs - obs_mean) / obs_std
    fields = dict(obs=normalize(data["observations"]), act=data["actions"], rew=data["rewards"])
    fields.update(next_obs=normalize(data["next_observations"]), term=data["terminations"])
    soft_return = np.zeros_like(data["rewards"])
    table, widths = utils.make_table({**fields, "soft_return": soft_return}, device)
    obs_dim = widths["obs"]
    act_dim = widths["act"]
    low = dataset.action_space.low.astype(np.float32)
    high = dataset.action_space.high.astype(np.float32)
    actor = Actor(obs_dim, act_dim, args.hidden_dims, args.actor_layernorm, low, high, args.bf16)
    dims = (args.hidden_dims, args.critic_layernorm, args.num_critics, args.bf16)
    critic = Critic(obs_dim, act_dim, *dims)
    actor.to(device)
    critic.to(device)
    critic_target = copy.deepcopy(critic)
    log_alpha = torch.zeros((), device=device, requires_grad=True)  # alpha starts at 1
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate, fused=True)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate, fused=True)
    alpha_optimizer = torch.optim.Adam([log_alpha], lr=args.learning_rate, fused=True)
    online_params = list(critic.parameters())
    target_params = list(critic_target.parameters())
    compiled = torch.compile if args.compile else (lambda fn: fn)
    bc_fn = compiled(soft_bc_loss)
    actor_fn = compiled(actor_loss)
    pretrain_critic_fn = compiled(pretrain_critic_loss)
    critic_fn = compiled(critic_loss)

    # plumbing: resume, logs, evaluation
    state = dict(actor=actor, critic=critic, critic_target=critic_target)
    state.update(actor_optimizer=actor_optimizer, critic_optimizer=critic_optimizer)
    state.update(alpha_optimizer=alpha_optimizer)
    ckpt = utils.load_checkpoint(run_dir, state, device) if args.resume else {}
    frozen_alpha = ckpt.get("frozen_alpha")  # alpha of the soft returns, once they are computed
    if args.resume:
        log_alpha.data.copy_(ckpt["log_alpha"])
        soft_return = ckpt["soft_return"] if frozen_alpha is not None else 0.0
        table[:, -1] = torch.as_tensor(soft_return, dtype=torch.float32, device=device)
    log = utils.RunLog(run_dir, args, ckpt or None)
    envs = utils.make_eval_envs(dataset, args, render=args.capture_video)

    @torch.no_grad()
    def policy(obs):
        obs = torch.as_tensor(normalize(obs).astype(np.float32), device=device)
        return actor(obs, deterministic=True)[0].cpu().numpy()

    # plumbing: --pretrain-steps auto holds out rows and watches their losses
    use_auto = args.pretrain_steps == "auto"
    val_rows, train_rows = utils.validation_split(table, args.seed) if use_auto else (None, None)
    cap = args.pretrain_max_steps if use_auto else args.pretrain_steps
    share = {"both": args.actor_pretrain_fraction, "actor": 1.0, "critic": 0.0}
    ends = {"actor": int(cap * share[args.pretrain_mode]), "critic": cap}
    ends = ckpt.get("pretrain_ends", ends)  # auto: decided as it goes
    plateaus = {p: utils.Plateau(history=ckpt.get("plateaus", {}).get(p)) for p in ends}
    converged = ckpt.get("converged", {})
    losses = {}
    for global_step in range(ckpt.get("update", 0), args.total_timesteps):
        phase = "pretrain" if global_step < ends["critic"] else "finetune"
        if phase == "pretrain" and global_step >= ends["actor"] and frozen_alpha is None:
            frozen_alpha = float(log_alpha.detach().exp())  # eq. 19, once
            soft_return = dataset_soft_returns(actor, frozen_alpha, table[:, :obs_dim], data, args)
            table[:, -1] = torch.as_tensor(soft_return, dtype=torch.float32, device=device)
        rows = train_rows if phase == "pretrain" else None
        batch = utils.sample_batch(table, widths, args.batch_size, rows)

        # ALGO LOGIC: one update
        if phase == "pretrain" and global_step < ends["actor"]:  # soft BC: alpha, then the actor
            alpha, info = temperature_step(actor, batch["obs"], log_alpha, alpha_optimizer)
            loss, bc_info = bc_fn(actor, batch["obs"], batch["act"], alpha)
            gradient_step(actor_optimizer, loss)
            losses.update({**info, **bc_info})
        elif phase == "pretrain":  # the critics on the soft returns; actor and alpha frozen
            loss, info = pretrain_critic_fn(
                critic,
                actor,
                critic_target,
                batch,
                frozen_alpha,
                args.eta,
                args.gamma,
                args.td_lambda,
            )
            gradient_step(critic_optimizer, loss)
            soft_update(target_params, online_params, args.tau)
            losses.update(info)
        else:  # EDAC+BC, in the paper's code's order: alpha -> actor -> critic
            alpha, info = temperature_step(actor, batch["obs"], log_alpha, alpha_optimizer)
            critic.requires_grad_(False)  # the actor needs dQ/da only
            loss, actor_info = actor_fn(
                actor, critic, batch["obs"], batch["act"], alpha, args.bc_weight
            )
            critic.requires_grad_(True)
            gradient_step(actor_optimizer, loss)
            loss, critic_info = critic_fn(
                critic, actor, critic_target, batch, alpha, args.eta, args.gamma
            )
            gradient_step(critic_optimizer, loss)
            soft_update(target_params, online_params, args.tau)
            losses.update({**info, **actor_info, **critic_info})

        # plumbing: the only host syncs, every --log-freq updates and at evaluations
        update = global_step + 1
        is_log = update % args.log_freq == 0
        if use_auto and phase == "pretrain" and (is_log or update in ends.values()):
            part = "actor" if global_step < ends["actor"] else "critic"
            val = utils.table_rows(table, widths, val_rows)
            losses[f"validation/{part}"] = auto_pretrain(
                actor, critic, val, part, plateaus[part], ends, converged, update, args, run_dir
            )
        is_eval = update % args.eval_freq == 0 or update == args.total_timesteps
        if is_log or is_eval:
            log.losses(losses, update, phase, ends.values())  # raises on NaN/inf
            losses.clear()
        if is_eval:
            row = log.evaluation(update, phase, policy, envs, ref)
            if args.save_model:
                soft_return = table[:, -1].cpu().numpy() if frozen_alpha is not None else None
                extra = dict(obs_mean=obs_mean, obs_std=obs_std, soft_return=soft_return)
                extra.update(frozen_alpha=frozen_alpha, pretrain_ends=ends, converged=converged)
                extra["log_alpha"] = log_alpha.detach().clone()
                extra["plateaus"] = {p: q.history for p, q in plateaus.items()}
                utils.save_checkpoint(run_dir, state, row, args, **extra)

    utils.final_evaluation(policy, dataset, args, ref, run_dir)
    envs.close()
    log.finish(args.score_window)
    return run_dir


if __name__ == "__main__":
    utils.cli(main, Args)
