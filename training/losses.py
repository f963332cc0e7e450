"""ADU losses: memorize, forget and the Domain Disentangling Loss (DDL)."""
import itertools

import torch
import torch.nn.functional as F


def memorize_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Class cross-entropy on memorized-domain samples (keep accuracy)."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels)


def forget_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the uniform distribution on forgotten-domain samples.

    Equal to -mean(log_softmax) over classes; minimised (at log C) by uniform predictions.
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    return -F.log_softmax(logits, dim=-1).mean(dim=-1).mean()


def median_bandwidth(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Median pairwise squared distance of the pooled samples (the authors' heuristic).

    Detached: the bandwidth is a statistic of the batch, not something to optimise.
    """
    z = torch.cat([x, y]).detach()
    sq_dists = torch.cdist(z, z).pow(2)
    off_diagonal = sq_dists[~torch.eye(len(z), dtype=torch.bool, device=z.device)]
    return off_diagonal.quantile(0.5).clamp_min(1e-6)  # interpolated median, as numpy


def mmd2_rbf(x: torch.Tensor, y: torch.Tensor, bandwidth: torch.Tensor = None) -> torch.Tensor:
    """Biased MMD^2 with a Gaussian kernel exp(-||a-b||^2 / bandwidth).

    Kxx.mean() + Kyy.mean() - 2 Kxy.mean(), bandwidth = median squared distance by default.
    """
    if bandwidth is None:
        bandwidth = median_bandwidth(x, y)

    def kernel(a, b):
        return torch.exp(-torch.cdist(a, b).pow(2) / bandwidth)

    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


def mean_pairwise_mmd2(features: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
    """MMD^2 averaged over every pair of domains present in the batch (0 if fewer than 2)."""
    present = torch.unique(domains).tolist()
    pairs = list(itertools.combinations(present, 2))
    if not pairs:
        return features.sum() * 0.0
    values = [mmd2_rbf(features[domains == a], features[domains == b]) for a, b in pairs]
    return torch.stack(values).mean()


def domain_disentangling_loss(domain_logits, features, domains, gamma: float, lam: float):
    """L_domain = gamma * CE(domain classifier) - lambda * mean pairwise MMD^2.

    Returns (loss, ce, mmd2) so that both parts can be logged.
    """
    ce = F.cross_entropy(domain_logits, domains)
    mmd2 = mean_pairwise_mmd2(features, domains)
    return gamma * ce - lam * mmd2, ce, mmd2
