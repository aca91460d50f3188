"""Updates/s of CORL-structured reference loops, written by us, to compare the scripts' speed
against.

The loops follow the structure of CORL's single-file TD3+BC and EDAC (the paper's code base):
plain eager fp32 PyTorch, default Adam, per-parameter Polyak averaging, a replay buffer that
indexes each field separately. They are not the scripts' algorithms in every detail (no state
normalization, no pretraining), only their cost per update with the same sizes (batch 256, 17
observations, 6 actions).

    python tools/speed_reference.py --algo td3bc [--layernorm]   # two nn.Sequential critics
    python tools/speed_reference.py --algo edac --num-critics 10  # x @ W + b, no LayerNorm
    ... --phase pretrain  # the pretraining update of the paper's code instead: TD3+BC's BC +
                          # MC-return critics, EDAC's critics on returns + diversity

`bash benchmark.sh speed` times these and the scripts in one run and prints the ratios.
"""

import argparse
import copy
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Buffer:
    """A dataset on the device; `sample` draws indices and indexes every field on its own
    (returns-to-go stand in for the reward in the pretraining updates, which never bootstrap)."""

    def __init__(self, size, obs_dim, act_dim):
        self.obs, self.next_obs = torch.randn(size, obs_dim), torch.randn(size, obs_dim)
        self.act = torch.rand(size, act_dim) * 2 - 1
        self.rew, self.done = torch.randn(size, 1), (torch.rand(size, 1) < 0.01).float()

    def sample(self, batch_size):
        idx = torch.randint(0, self.obs.shape[0], (batch_size,))
        return self.obs[idx], self.act[idx], self.rew[idx], self.next_obs[idx], self.done[idx]


def polyak(target, source, tau):
    """Per-parameter soft update, one parameter at a time."""
    for target_param, param in zip(target.parameters(), source.parameters()):
        target_param.data.copy_((1 - tau) * target_param.data + tau * param.data)


def sequential(in_dim, out_dim, hidden, layernorm, out_act=None):
    layers = []
    for _ in range(2):
        layers += (
            [nn.Linear(in_dim, hidden)]
            + ([nn.LayerNorm(hidden)] if layernorm else [])
            + [nn.ReLU()]
        )
        in_dim = hidden
    layers.append(nn.Linear(hidden, out_dim))
    return nn.Sequential(*layers, *([out_act] if out_act else []))


class TD3BCReference:
    """Actor and two separate critics (each with its own Adam), policy delay 2, TD3+BC loss."""

    def __init__(self, obs_dim, act_dim, layernorm, hidden=256, alpha=2.5):
        self.actor = sequential(obs_dim, act_dim, hidden, layernorm, nn.Tanh())
        self.critic_1 = sequential(obs_dim + act_dim, 1, hidden, layernorm)
        self.critic_2 = sequential(obs_dim + act_dim, 1, hidden, layernorm)
        self.actor_target, self.critic_1_target, self.critic_2_target = (
            copy.deepcopy(m) for m in (self.actor, self.critic_1, self.critic_2)
        )
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.critic_1_optimizer = torch.optim.Adam(self.critic_1.parameters(), lr=3e-4)
        self.critic_2_optimizer = torch.optim.Adam(self.critic_2.parameters(), lr=3e-4)
        self.alpha, self.total_it = alpha, 0

    def critic_step(self, critic_loss):
        """One backward through both critics, then each critic's own Adam step."""
        self.critic_1_optimizer.zero_grad()
        self.critic_2_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_1_optimizer.step()
        self.critic_2_optimizer.step()

    def polyak_all(self, tau):
        polyak(self.critic_1_target, self.critic_1, tau)
        polyak(self.critic_2_target, self.critic_2, tau)
        polyak(self.actor_target, self.actor, tau)

    def train(self, batch, gamma=0.99, tau=0.005):
        self.total_it += 1
        state, action, reward, next_state, done = batch
        with torch.no_grad():
            noise = (torch.randn_like(action) * 0.2).clamp(-0.5, 0.5)
            next_action = (self.actor_target(next_state) + noise).clamp(-1, 1)
            x = torch.cat([next_state, next_action], 1)
            target_q = reward + (1 - done) * gamma * torch.min(
                self.critic_1_target(x), self.critic_2_target(x)
            )
        x = torch.cat([state, action], 1)
        critic_loss = F.mse_loss(self.critic_1(x), target_q) + F.mse_loss(
            self.critic_2(x), target_q
        )
        self.critic_step(critic_loss)
        if self.total_it % 2 == 0:
            pi = self.actor(state)
            q = self.critic_1(torch.cat([state, pi], 1))
            actor_loss = -self.alpha / q.abs().mean().detach() * q.mean() + F.mse_loss(pi, action)
            self.actor_optimizer.zero_grad()
            actor_loss.backward()
            self.actor_optimizer.step()
            self.polyak_all(tau)

    def pretrain(self, batch, tau=0.005):
        """The paper's TD3+BC pretraining update: both critics' MSE to the return, the actor's BC
        MSE."""
        state, action, returns, _, _ = batch
        x = torch.cat([state, action], 1)
        critic_loss = F.mse_loss(self.critic_1(x), returns) + F.mse_loss(self.critic_2(x), returns)
        self.critic_step(critic_loss)
        actor_loss = F.mse_loss(self.actor(state), action)
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()
        self.polyak_all(tau)


class EnsembleLinear(nn.Module):
    """N linear layers as x @ W + b with W [N, in, out]."""

    def __init__(self, in_dim, out_dim, n):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim))
        for i in range(n):
            nn.init.kaiming_uniform_(self.weight[i], a=math.sqrt(5))
        nn.init.uniform_(self.bias, -1 / math.sqrt(in_dim), 1 / math.sqrt(in_dim))

    def forward(self, x):
        return x @ self.weight + self.bias


class EnsembleCritic(nn.Module):
    def __init__(self, obs_dim, act_dim, n, hidden=256):
        super().__init__()
        self.n = n
        self.net = nn.Sequential(
            EnsembleLinear(obs_dim + act_dim, hidden, n),
            nn.ReLU(),
            EnsembleLinear(hidden, hidden, n),
            nn.ReLU(),
            EnsembleLinear(hidden, hidden, n),
            nn.ReLU(),
            EnsembleLinear(hidden, 1, n),
        )

    def forward(self, state, action):
        x = torch.cat([state, action], -1)
        if x.dim() == 2:  # the same batch for every member
            x = x.unsqueeze(0).repeat_interleave(self.n, dim=0)
        return self.net(x).squeeze(-1)  # [N, B]


class GaussianActor(nn.Module):
    def __init__(self, obs_dim, act_dim, hidden=256):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(obs_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.mu, self.log_sigma = nn.Linear(hidden, act_dim), nn.Linear(hidden, act_dim)

    def forward(self, state):
        h = self.trunk(state)
        dist = torch.distributions.Normal(self.mu(h), torch.exp(self.log_sigma(h).clamp(-5, 2)))
        u = dist.rsample()
        action = torch.tanh(u)
        log_prob = (dist.log_prob(u) - torch.log(1 - action.pow(2) + 1e-6)).sum(-1)
        return action, log_prob


class EDACReference:
    """SAC with N critics: alpha, then actor, then critic (TD + eta x gradient diversity),
    per-parameter Polyak."""

    def __init__(self, obs_dim, act_dim, n, eta=1.0):
        self.actor, self.critic = (
            GaussianActor(obs_dim, act_dim),
            EnsembleCritic(obs_dim, act_dim, n),
        )
        self.target_critic = copy.deepcopy(self.critic)
        self.log_alpha = torch.tensor([0.0], requires_grad=True)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=3e-4)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=3e-4)
        self.n, self.eta, self.target_entropy = n, eta, -float(act_dim)

    def diversity(self, state, action):
        state = state.unsqueeze(0).repeat_interleave(self.n, dim=0)
        action = action.unsqueeze(0).repeat_interleave(self.n, dim=0).requires_grad_(True)
        q = self.critic(state, action)
        grads = torch.autograd.grad(q.sum(), action, retain_graph=True, create_graph=True)[0]
        grads = grads / (torch.norm(grads, p=2, dim=2).unsqueeze(-1) + 1e-10)
        grads = grads.transpose(0, 1)  # [B, N, A]
        products = torch.einsum("bik,bjk->bij", grads, grads)
        off_diagonal = 1 - torch.eye(self.n).unsqueeze(0)
        return (products * off_diagonal).sum(dim=(1, 2)).mean() / (self.n - 1)

    def train(self, batch, gamma=0.99, tau=0.005):
        state, action, reward, next_state, done = batch
        reward, done = reward.squeeze(-1), done.squeeze(-1)
        with torch.no_grad():
            _, log_prob = self.actor(state)
        alpha_loss = (-self.log_alpha * (log_prob + self.target_entropy)).mean()
        self.alpha_optimizer.zero_grad()
        alpha_loss.backward()
        self.alpha_optimizer.step()
        alpha = self.log_alpha.exp().detach()

        pi, log_prob = self.actor(state)
        actor_loss = (alpha * log_prob - self.critic(state, pi).min(0).values).mean()
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()

        with torch.no_grad():
            next_action, next_log_prob = self.actor(next_state)
            q_next = (
                self.target_critic(next_state, next_action).min(0).values - alpha * next_log_prob
            )
            target_q = reward + gamma * (1 - done) * q_next
        q = self.critic(state, action)
        critic_loss = ((q - target_q.unsqueeze(0)) ** 2).mean(dim=1).sum(
            dim=0
        ) + self.eta * self.diversity(state, action)
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_optimizer.step()
        polyak(self.target_critic, self.critic, tau)

    def pretrain(self, batch, tau=0.005):
        """The paper's EDAC critic pretraining: MSE to the (soft) return averaged over members, +
        eta diversity."""
        state, action, returns, _, _ = batch
        q = self.critic(state, action)
        critic_loss = ((q - returns.view(1, -1)) ** 2).mean() + self.eta * self.diversity(
            state, action
        )
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_optimizer.step()
        polyak(self.target_critic, self.critic, tau)


def updates_per_second(update, buffer, steps, warmup=3, batch_size=256):
    for _ in range(warmup):
        update(buffer.sample(batch_size))
    start = time.perf_counter()
    for _ in range(steps):
        update(buffer.sample(batch_size))
    return steps / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--algo", choices=["td3bc", "edac"], required=True)
    parser.add_argument(
        "--layernorm",
        action="store_true",
        help="TD3+BC: LayerNorm after every hidden Linear (the paper's)",
    )
    parser.add_argument("--phase", choices=["finetune", "pretrain"], default="finetune")
    parser.add_argument("--num-critics", type=int, default=10, help="EDAC ensemble size")
    parser.add_argument(
        "--steps", type=int, default=0, help="timed updates (default: td3bc 500, edac 20)"
    )
    parser.add_argument("--obs-dim", type=int, default=17)
    parser.add_argument("--act-dim", type=int, default=6)
    args = parser.parse_args(argv)
    if args.num_critics < 2 or args.steps < 0:
        parser.error("--num-critics must be at least 2 and --steps >= 0")
    torch.manual_seed(0)
    buffer = Buffer(100_000, args.obs_dim, args.act_dim)
    if args.algo == "td3bc":
        agent = TD3BCReference(args.obs_dim, args.act_dim, args.layernorm)
        norm = "LayerNorm" if args.layernorm else "no LayerNorm"
        what = f"CORL-structured TD3+BC ({norm}, 256x2, eager fp32)"
    else:
        agent = EDACReference(args.obs_dim, args.act_dim, args.num_critics)
        what = f"CORL-structured EDAC (N={args.num_critics}, no LayerNorm, 256x3, eager fp32)"
    update = agent.pretrain if args.phase == "pretrain" else agent.train
    ups = updates_per_second(update, buffer, args.steps or (500 if args.algo == "td3bc" else 20))
    print(f"{what}, {args.phase}: {ups:.1f} updates/s")
    return ups


if __name__ == "__main__":
    main()
