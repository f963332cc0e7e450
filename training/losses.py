"""ADU losses as the authors compute them (engine/trainer.py, ../shared/ADU_METHOD.md):
memorize (class CE), forget (maximised prediction entropy) and the Domain Disentangling Loss
(domain-classifier CE minus the MMD between domains of the domain classifier's outputs)."""
import itertools

import torch
import torch.nn.functional as F

ENTROPY_EPS = 1e-5  # the authors' log(p + 1e-5)


def memorize_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Class cross-entropy on memorized-domain samples (keep accuracy)."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels)


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the class predictions: -mean(sum(p * log(p + 1e-5)))."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    p = logits.softmax(dim=-1)
    return -(p * torch.log(p + ENTROPY_EPS)).sum(dim=-1).mean()


def forget_loss(logits: torch.Tensor) -> torch.Tensor:
    """The entropy of forgotten-domain predictions, maximised: the loss term is -H."""
    return -prediction_entropy(logits)


def median_bandwidth(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sigma = median of the cross-domain distances ||x_i - y_j|| (torch.median: the lower
    middle value for an even count), with no gradient through it."""
    return torch.cdist(x.detach(), y.detach()).median().clamp_min(1e-6)


def mmd2_rbf(x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor = None) -> torch.Tensor:
    """Biased MMD^2, Gaussian kernel exp(-d^2 / (2 sigma^2)):
    Kxx.mean() + Kyy.mean() - 2 Kxy.mean(), sigma = median cross-domain distance by default."""
    if sigma is None:
        sigma = median_bandwidth(x, y)

    def kernel(a, b):
        return torch.exp(-torch.cdist(a, b).pow(2) / (2 * sigma ** 2))

    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


def mean_pairwise_mmd2(features: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
    """MMD^2 averaged over the pairs of domains that both have more than one sample in the
    batch (0 when there is no such pair)."""
    values, counts = torch.unique(domains, return_counts=True)
    present = values[counts > 1].tolist()
    pairs = list(itertools.combinations(present, 2))
    if not pairs:
        return features.sum() * 0.0
    mmds = [mmd2_rbf(features[domains == a], features[domains == b]) for a, b in pairs]
    return torch.stack(mmds).mean()


def domain_disentangling_loss(domain_logits: torch.Tensor, domains: torch.Tensor,
                              gamma: float, lam: float):
    """L_DDL = gamma * CE(domain classifier) - lambda * MMD^2 of the domain classifier's
    outputs between domains (maximised). Returns (loss, ce, mmd2) so both parts can be logged."""
    ce = F.cross_entropy(domain_logits, domains)
    mmd2 = mean_pairwise_mmd2(domain_logits, domains)
    return gamma * ce - lam * mmd2, ce, mmd2
