"""Write the example notebooks (and their small data) from the cell texts below.

The notebooks are checked in; run this after editing a cell here so that the notebooks, the
tests that execute them and the exporter's tests stay in step:

    python example_notebooks/make_notebooks.py
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SALES: list[tuple[str, list[str]] | str] = [
    "# Sales analysis\n\nMonthly revenue from a small CSV of orders. Every `%%step` cell is "
    "cached: run the notebook twice and the second run is served from `.nbflow` beside it.",
    ("code", ["%load_ext nbflow"]),
    ("parameters", [
        "# parameters (papermill convention: a cell tagged 'parameters')",
        "min_units = 2",
        "currency = \"EUR\"",
    ]),
    ("code", [
        "%%step load",
        "import pandas as pd",
        "",
        "sales = pd.read_csv(\"data/sales.csv\", parse_dates=[\"date\"])",
        "print(f\"{len(sales)} orders\")",
        "sales.head()",
    ]),
    ("code", [
        "%%step clean",
        "orders = sales[sales.units >= min_units].assign(revenue=lambda d: d.units * d.price)",
        "print(f\"kept {len(orders)} of {len(sales)} orders with at least {min_units} units\")",
    ]),
    ("code", [
        "%%step monthly",
        "by_month = (",
        "    orders.assign(month=orders.date.dt.strftime(\"%Y-%m\"))",
        "    .groupby(\"month\")[[\"units\", \"revenue\"]].sum()",
        ")",
        "by_month",
    ]),
    ("code", [
        "%%step chart",
        "import matplotlib.pyplot as plt",
        "",
        "_fig, _ax = plt.subplots(figsize=(6, 3))",
        "by_month.plot.bar(y=\"revenue\", ax=_ax, legend=False, color=\"#4c72b0\")",
        "_ax.set_ylabel(f\"revenue ({currency})\")",
        "_ax.set_title(\"Revenue by month\")",
        "best_month = by_month.revenue.idxmax()",
        "print(\"best month:\", best_month)",
    ]),
    ("code", [
        "import nbflow",
        "",
        "",
        "@nbflow.step",
        "def top_products(orders):",
        "    \"\"\"The three products with the most revenue.\"\"\"",
        "    return orders.groupby(\"product\").revenue.sum().sort_values(ascending=False).head(3)",
    ]),
    ("code", [
        "%%step report",
        "lines = [f\"{name}: {value:,.0f} {currency}\" for name, value in top_products.items()]",
        "print(\"\\n\".join(lines))",
    ]),
    ("code", ["%flow status"]),
]

MODEL: list[tuple[str, list[str]] | str] = [
    "# Fitting a line by gradient descent\n\nA deliberately slow, pure-Python fit (a few "
    "seconds). Re-running the notebook in a fresh kernel serves every step from the cache.",
    ("code", ["%load_ext nbflow"]),
    ("parameters", [
        "# parameters",
        "seed = 7",
        "n_points = 400",
        "learning_rate = 0.05",
        "epochs = 8000",
    ]),
    ("code", [
        "%%step make_data",
        "import random",
        "",
        "_rng = random.Random(seed)",
        "xs = [_rng.uniform(-1, 1) for _ in range(n_points)]",
        "ys = [3.0 * x - 0.5 + _rng.gauss(0, 0.1) for x in xs]",
        "print(f\"{len(xs)} points\")",
    ]),
    ("code", [
        "def predict(w, b, x):",
        "    return w * x + b",
    ]),
    ("code", [
        "%%step fit --out w,b",
        "w, b = 0.0, 0.0",
        "for _epoch in range(epochs):",
        "    grad_w = grad_b = 0.0",
        "    for x, y in zip(xs, ys):",
        "        err = predict(w, b, x) - y",
        "        grad_w += err * x",
        "        grad_b += err",
        "    w -= learning_rate * 2 * grad_w / len(xs)",
        "    b -= learning_rate * 2 * grad_b / len(xs)",
        "print(f\"w={w:.3f} b={b:.3f}\")",
    ]),
    ("code", [
        "%%step evaluate",
        "mse = sum((predict(w, b, x) - y) ** 2 for x, y in zip(xs, ys)) / len(xs)",
        "print(f\"mean squared error: {mse:.4f}\")",
    ]),
    ("code", ["%flow status"]),
]


def notebook(cells: list[tuple[str, list[str]] | str]) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(cells):
        if isinstance(cell, str):
            nb.cells.append(new_markdown_cell(cell, id=f"cell-{i:02d}"))
            continue
        kind, lines = cell
        code = new_code_cell("\n".join(lines), id=f"cell-{i:02d}")
        if kind == "parameters":
            code.metadata["tags"] = ["parameters"]
        nb.cells.append(code)
    nbformat.validate(nb)
    return nb


def sales_csv(path: Path) -> None:
    rng = random.Random(2024)
    products = [("notebook", 4.5), ("pen", 1.2), ("stapler", 9.9), ("lamp", 24.0),
                ("chair", 89.0), ("mug", 6.5)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["date", "product", "units", "price"])
        for i in range(240):
            month = 1 + i % 12
            day = 1 + rng.randrange(28)
            product, price = rng.choice(products)
            out.writerow([f"2024-{month:02d}-{day:02d}", product, rng.randint(1, 12), price])


def main() -> None:
    sales_csv(HERE / "data" / "sales.csv")
    nbformat.write(notebook(SALES), HERE / "sales_analysis.ipynb")
    nbformat.write(notebook(MODEL), HERE / "model_fit.ipynb")
    print("wrote sales_analysis.ipynb, model_fit.ipynb and data/sales.csv")


if __name__ == "__main__":
    main()
