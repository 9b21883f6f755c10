"""Generate the demo dataset ``cloud_costs.csv`` (deterministic: fixed seed, fixed months).

Run from anywhere::

    python examples/agents/finops_cost_data_analyst/data/generate.py

One row per month and line item (provider, service, project/account, team, env) for the six
full months 2026-05 .. 2026-10. The numbers are invented but shaped like a real bill: a few
services dominate, prod costs more than dev, some items grow steadily, and October has a
couple of deliberate spikes (BigQuery in the data team, GKE for ML training) so the anomaly
question has something to find.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import NamedTuple

SEED = 20261031
MONTHS = ["2026-05", "2026-06", "2026-07", "2026-08", "2026-09", "2026-10"]
OUT = Path(__file__).with_name("cloud_costs.csv")


class Item(NamedTuple):
    provider: str
    service: str
    project: str
    team: str
    env: str
    base: float  # monthly cost in May, USD
    growth: float  # monthly growth rate, e.g. 0.03 = +3 % per month
    noise: float = 0.04  # relative month-to-month noise
    spike: float = 1.0  # multiplier applied to the last month only


def _items() -> list[Item]:
    items: list[Item] = []

    def add(provider: str, project: str, team: str, env: str, services: dict[str, tuple]) -> None:
        for service, spec in services.items():
            items.append(Item(provider, service, project, team, env, *spec))

    # --- GCP -------------------------------------------------------------------------------
    add(
        "GCP",
        "acme-data-prod",
        "data",
        "prod",
        {
            "BigQuery": (14200.0, 0.035, 0.03, 1.42),
            "Cloud Storage": (3100.0, 0.02),
            "Dataflow": (2650.0, 0.01),
            "Pub/Sub": (640.0, 0.015),
            "Cloud Logging": (410.0, 0.0),
            "Compute Engine": (1900.0, 0.0),
        },
    )
    add(
        "GCP",
        "acme-data-dev",
        "data",
        "dev",
        {
            "BigQuery": (1850.0, 0.02, 0.08),
            "Cloud Storage": (420.0, 0.01),
            "Compute Engine": (380.0, -0.02),
        },
    )
    add(
        "GCP",
        "acme-ml-prod",
        "ml",
        "prod",
        {
            "Vertex AI": (6800.0, 0.06, 0.05),
            "GKE": (5200.0, 0.03, 0.03, 1.35),
            "Compute Engine": (4300.0, 0.02),
            "Cloud Storage": (1750.0, 0.04),
            "BigQuery": (980.0, 0.02),
        },
    )
    add(
        "GCP",
        "acme-ml-dev",
        "ml",
        "dev",
        {
            "Vertex AI": (2100.0, 0.03, 0.1),
            "Compute Engine": (1650.0, 0.0, 0.08),
            "Cloud Storage": (310.0, 0.02),
        },
    )
    add(
        "GCP",
        "acme-platform-prod",
        "platform",
        "prod",
        {
            "GKE": (7400.0, 0.015),
            "Cloud SQL": (3900.0, 0.01),
            "Compute Engine": (2800.0, -0.01),
            "Cloud Load Balancing": (1150.0, 0.01),
            "Cloud Logging": (1320.0, 0.025),
            "Cloud Monitoring": (560.0, 0.01),
            "Cloud Storage": (690.0, 0.01),
            "Cloud Run": (820.0, 0.05),
        },
    )
    add(
        "GCP",
        "acme-platform-staging",
        "platform",
        "staging",
        {
            "GKE": (1900.0, 0.0),
            "Cloud SQL": (840.0, 0.0),
            "Cloud Logging": (260.0, 0.0),
            "Cloud Run": (190.0, 0.03),
        },
    )
    add(
        "GCP",
        "acme-platform-dev",
        "platform",
        "dev",
        {
            "GKE": (950.0, -0.01, 0.06),
            "Cloud SQL": (420.0, 0.0),
            "Compute Engine": (610.0, 0.0, 0.08),
        },
    )
    add(
        "GCP",
        "acme-web-prod",
        "web",
        "prod",
        {
            "Cloud Run": (1450.0, 0.04),
            "Cloud CDN": (530.0, 0.02),
            "Cloud SQL": (1280.0, 0.01),
            "Cloud Storage": (240.0, 0.01),
        },
    )
    # --- AWS -------------------------------------------------------------------------------
    add(
        "AWS",
        "aws-web-prod",
        "web",
        "prod",
        {
            "EC2": (9800.0, 0.01),
            "RDS": (4600.0, 0.01),
            "S3": (1900.0, 0.02),
            "CloudFront": (2350.0, 0.03),
            "Lambda": (760.0, -0.04),
            "ElastiCache": (1350.0, 0.0),
            "DynamoDB": (890.0, 0.03),
            "CloudWatch": (520.0, 0.02),
        },
    )
    add(
        "AWS",
        "aws-web-staging",
        "web",
        "staging",
        {
            "EC2": (2100.0, 0.0),
            "RDS": (950.0, 0.0),
            "S3": (180.0, 0.01),
            "Lambda": (120.0, 0.0, 0.1),
        },
    )
    add(
        "AWS",
        "aws-web-dev",
        "web",
        "dev",
        {
            "EC2": (1150.0, -0.03, 0.08),
            "RDS": (480.0, 0.0),
            "S3": (90.0, 0.0),
        },
    )
    add(
        "AWS",
        "aws-platform-prod",
        "platform",
        "prod",
        {
            "EKS": (3300.0, 0.02),
            "EC2": (5100.0, 0.015),
            "S3": (1250.0, 0.02),
            "CloudWatch": (780.0, 0.03),
            "NAT Gateway": (1400.0, 0.02, 0.05, 1.18),
        },
    )
    add(
        "AWS",
        "aws-platform-dev",
        "platform",
        "dev",
        {
            "EKS": (620.0, 0.0),
            "EC2": (940.0, -0.02, 0.07),
        },
    )
    add(
        "AWS",
        "aws-data-prod",
        "data",
        "prod",
        {
            "S3": (2700.0, 0.025),
            "Redshift": (4100.0, 0.0),
            "Lambda": (310.0, 0.05, 0.1),
            "EC2": (1200.0, 0.01),
        },
    )
    add(
        "AWS",
        "aws-ml-prod",
        "ml",
        "prod",
        {
            "SageMaker": (3600.0, 0.05, 0.06),
            "S3": (870.0, 0.03),
            "EC2": (2200.0, 0.02, 0.05, 1.25),
        },
    )
    return items


def generate() -> list[dict[str, str]]:
    rng = random.Random(SEED)
    rows: list[dict[str, str]] = []
    items = _items()
    for m, month in enumerate(MONTHS):
        for item in items:
            cost = item.base * (1.0 + item.growth) ** m * (1.0 + rng.gauss(0.0, item.noise))
            if m == len(MONTHS) - 1:
                cost *= item.spike
            rows.append(
                {
                    "date": f"{month}-01",
                    "provider": item.provider,
                    "service": item.service,
                    "project": item.project,
                    "team": item.team,
                    "env": item.env,
                    "cost_usd": f"{max(cost, 0.0):.2f}",
                }
            )
    return rows


def main() -> None:
    rows = generate()
    with OUT.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main()
