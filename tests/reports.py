"""The JSON report of a result without its clock, for comparing two audits that must agree
(merged shards against the whole audit)."""

from properties.output.report import to_dict


def timeless_report(result) -> dict:
    data = to_dict(result, "target")
    data.pop("seconds")
    if data["certificate"]:
        data["certificate"].pop("seconds")
    return data
