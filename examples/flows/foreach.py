"""Metaflow's foreach example ("Creating Flows"), written with nbflow.

    python examples/flows/foreach.py run
"""

from nbflow import FlowSpec, JSONType, Parameter, step


class ForeachFlow(FlowSpec):
    """Process each title in its own task, then join the results."""

    alpha = Parameter("alpha", help="Learning rate", default=0.01)
    gdp = Parameter("gdp", type=JSONType, default='{"US": 1939}')

    @step
    def start(self):
        """Choose the titles."""
        self.titles = ["Stranger Things", "House of Cards", "Narcos"]
        self.next(self.a, foreach="titles")

    @step
    def a(self):
        """One task per title."""
        self.title = "%s processed" % self.input
        self.next(self.join)

    @step
    def join(self, inputs):
        """Collect every task's title."""
        self.results = [i.title for i in inputs]
        self.next(self.end)

    @step
    def end(self):
        print("\n".join(self.results))


if __name__ == "__main__":
    ForeachFlow()
