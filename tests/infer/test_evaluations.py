"""evaluations_per_step: the count by hand, the rows the step really runs, the others."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from pyro_ils.estimators import ReinMax
from pyro_ils.infer import (
    TraceDisARM_ELBO,
    TraceGraphILS_ELBO,
    TraceILS_ELBO,
    TraceILSDiff_ELBO,
    TraceIndeCateR_ELBO,
    TraceMuProp_ELBO,
    TraceREBAR_ELBO,
    TraceRELAX_ELBO,
    TraceRLOO_ELBO,
    evaluations_per_step,
)
from pyro_ils.infer.site_choice import DIFFERENCES

pytestmark = pytest.mark.usefixtures("clean_param_store")

MU, NU = torch.randn(3), torch.randn(4)
DATA = torch.randn(5)
#: Per draw: the draw itself, then M = C * K rows per routed site:
#: z (global, K=3): 1 block -> 3; b (.to_event(1) of 2, K=2): 2 blocks -> 4;
#: zc (plate "c" of 3, coupled by y after it, K=2): 3 blocks -> 6;
#: zl (plate "data" of 5, split: every term after it is in the plate, K=4): 1 block -> 4.
#: (Were y after the data plate, "data" would not split: 5 blocks -> 20.)
PER_DRAW = 1 + 3 + 4 + 6 + 4


def make_problem(rows: list):
    def model():
        z = pyro.sample("z", dist.Categorical(torch.ones(3) / 3))
        if z.dim():
            rows.append(z.shape[0])  # the run over the alternatives
        b = pyro.sample("b", dist.Bernoulli(0.5 * torch.ones(2)).to_event(1))
        with pyro.plate("c", 3):
            zc = pyro.sample("zc", dist.Bernoulli(0.5))
        mean = b.sum(-1) + zc.sum(-1, keepdim=True)
        pyro.sample("y", dist.Normal(mean, 1.0), obs=torch.tensor(1.0))
        with pyro.plate("data", 5):
            zl = pyro.sample("zl", dist.Categorical(torch.ones(4) / 4))
            pyro.sample("x", dist.Normal(MU[z] + NU[zl], 1.0), obs=DATA)

    def guide():
        pyro.sample("z", dist.Categorical(logits=pyro.param("qz", torch.zeros(3))))
        pyro.sample("b", dist.Bernoulli(logits=pyro.param("qb", torch.zeros(2))).to_event(1))
        with pyro.plate("c", 3):
            pyro.sample("zc", dist.Bernoulli(logits=pyro.param("qc", torch.zeros(3))))
        with pyro.plate("data", 5):
            pyro.sample("zl", dist.Categorical(logits=pyro.param("ql", torch.zeros(5, 4))))

    return model, guide


@pytest.mark.parametrize("num_particles", [1, 2])
@pytest.mark.parametrize("cls", [TraceILSDiff_ELBO, TraceIndeCateR_ELBO])
def test_exact_difference_count_by_hand_and_as_run(cls, num_particles):
    kw = {"num_particles": num_particles} if cls is TraceILSDiff_ELBO else {}
    if cls is TraceIndeCateR_ELBO:
        kw["num_samples"] = num_particles
    elbo = cls(max_plate_nesting=1, **kw)
    rows = []
    model, guide = make_problem(rows)
    pyro.set_rng_seed(0)
    count = evaluations_per_step(elbo, model, guide)
    assert count == num_particles * PER_DRAW
    assert rows == []  # counting runs no alternatives
    # the step itself runs that many rows of alternatives per particle
    elbo.loss_and_grads(model, guide)
    assert rows == [PER_DRAW - 1] * num_particles


@pytest.mark.parametrize(
    "make_elbo",
    [
        lambda: TraceILSDiff_ELBO(max_plate_nesting=1, num_particles=2),
        lambda: TraceILS_ELBO(max_alternatives=5, max_plate_nesting=1),  # chooses first
    ],
)
def test_random_state_is_restored(make_elbo):
    model, guide = make_problem([])
    pyro.set_rng_seed(1)
    evaluations_per_step(make_elbo(), model, guide)
    after = torch.rand(3)
    pyro.set_rng_seed(1)
    assert torch.equal(after, torch.rand(3))


def test_fixed_costs_and_unknown_elbo():
    model, guide = make_problem([])
    cases = [
        (TraceRLOO_ELBO(num_samples=5), 5),
        (TraceDisARM_ELBO(num_pairs=3), 6),
        (TraceMuProp_ELBO(num_particles=2), 4),
        (TraceREBAR_ELBO(), 3),
        (TraceRELAX_ELBO(num_particles=2), 6),
        (Trace_ELBO(num_particles=4), 4),
        (TraceILS_ELBO(estimator=ReinMax(1.0), num_particles=3), 3),
        (TraceILS_ELBO(step_size=1.0, projection="euclidean"), 1),
        (TraceILS_ELBO(max_alternatives=0, num_particles=2), 2),
    ]
    for elbo, expected in cases:
        assert evaluations_per_step(elbo, model, guide) == expected, type(elbo).__name__
    with pytest.raises(TypeError, match="TraceEnum_ELBO"):
        evaluations_per_step(TraceEnum_ELBO(), model, guide)


@pytest.mark.parametrize(
    "max_alternatives, rows_per_draw",
    [
        (20, PER_DRAW - 1),  # every site within the budget: exact differences everywhere
        (5, 3 + 4 + 4),  # zc (6 rows) gets the midpoint limit and adds no row
        (3, 3),  # only z (3 rows) keeps exact differences
    ],
)
@pytest.mark.parametrize("num_particles", [1, 2])
def test_default_counts_the_sites_its_choice_gave_differences(
    max_alternatives, rows_per_draw, num_particles
):
    rows = []
    model, guide = make_problem(rows)
    elbo = TraceILS_ELBO(
        max_alternatives=max_alternatives, max_plate_nesting=1, num_particles=num_particles
    )
    pyro.set_rng_seed(0)
    before = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    count = evaluations_per_step(elbo, model, guide)  # before any step: chosen first
    assert count == num_particles * (1 + rows_per_draw)
    after = dict(pyro.get_param_store().items())
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing changed
    assert all(p.grad is None for p in after.values())  # and no gradient left behind
    rows.clear()
    elbo.loss_and_grads(model, guide)  # the step runs that many rows per particle
    assert sum(rows) == num_particles * rows_per_draw
    assert evaluations_per_step(elbo, model, guide) == count  # the same once chosen


def test_default_kept_at_the_midpoint_limit_counts_one():
    """TraceGraphILS_ELBO() with a site left to the score function keeps the midpoint
    limit on every routed site: one evaluation per particle."""

    def model():
        pyro.sample("z", dist.Categorical(torch.ones(3) / 3))
        pyro.sample("s", dist.Poisson(2.0))

    def guide():
        pyro.sample("z", dist.Categorical(logits=pyro.param("qz", torch.zeros(3))))
        pyro.sample("s", dist.Poisson(pyro.param("rate", torch.tensor(2.0))))

    elbo = TraceGraphILS_ELBO(num_particles=3)
    assert evaluations_per_step(elbo, model, guide) == 3
    assert set(elbo.site_choices) == {"z"}
    assert elbo.site_choices["z"].member != DIFFERENCES


def test_matched_rloo_runs():
    """The intended use: RLOO with as many samples as the exact-difference ELBO runs."""
    model, guide = make_problem([])
    n = evaluations_per_step(TraceILSDiff_ELBO(max_plate_nesting=1), model, guide)
    loss = TraceRLOO_ELBO(num_samples=n, max_plate_nesting=1).loss_and_grads(model, guide)
    assert isinstance(loss, float)
