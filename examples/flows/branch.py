"""Metaflow's branch example ("Creating Flows"), written with nbflow.

    python examples/flows/branch.py run --max-workers 2
"""

from nbflow import FlowSpec, step


class BranchFlow(FlowSpec):
    """start branches into a and b, which run independently; join reads both."""

    @step
    def start(self):
        self.next(self.a, self.b)

    @step
    def a(self):
        self.x = 1
        self.next(self.join)

    @step
    def b(self):
        self.x = 2
        self.next(self.join)

    @step
    def join(self, inputs):
        """x is ambiguous here: read it per branch, or iterate over all of them."""
        print("a is %s" % inputs.a.x)
        print("b is %s" % inputs.b.x)
        print("total is %d" % sum(input.x for input in inputs))
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    BranchFlow()
