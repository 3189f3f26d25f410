"""Metaflow's parameter example ("Creating Flows"), written with nbflow.

    python examples/flows/parameter_flow.py run --alpha 0.6
    python examples/flows/parameter_flow.py run --help
"""

from nbflow import FlowSpec, Parameter, step


class ParameterFlow(FlowSpec):
    """A flow with a typed parameter (a float, from its default)."""

    alpha = Parameter("alpha", help="Learning rate", default=0.01)

    @step
    def start(self):
        print("alpha is %f" % self.alpha)
        self.next(self.end)

    @step
    def end(self):
        print("alpha is still %f" % self.alpha)


if __name__ == "__main__":
    ParameterFlow()
