"""A required parameter with an explicit type ("Creating Flows"), written with nbflow.

    python examples/flows/required_parameter_flow.py run --num_components 3
"""

from nbflow import FlowSpec, Parameter, step


class RequiredParameterFlow(FlowSpec):
    """Cannot run without --num_components."""

    num_components = Parameter("num_components", help="Number of components", required=True,
                               type=int)

    @step
    def start(self):
        self.components = list(range(self.num_components))
        print("components: %s" % self.components)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    RequiredParameterFlow()
