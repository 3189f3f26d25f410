"""Metaflow's linear example ("Creating Flows"), written with nbflow.

    python examples/flows/linear.py run
"""

from nbflow import FlowSpec, step


class LinearFlow(FlowSpec):
    """Two linear transitions: start -> a -> end."""

    @step
    def start(self):
        """Create an artifact."""
        self.my_var = "hello world"
        self.next(self.a)

    @step
    def a(self):
        """Read it in the next step."""
        print("the data artifact is: %s" % self.my_var)
        self.next(self.end)

    @step
    def end(self):
        """It is still there at the end."""
        print("the data artifact is still: %s" % self.my_var)


if __name__ == "__main__":
    LinearFlow()
