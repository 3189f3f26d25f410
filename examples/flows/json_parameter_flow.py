"""Metaflow's JSON parameter example ("Creating Flows"), written with nbflow.

    python examples/flows/json_parameter_flow.py run --gdp '{"US": 1}'
"""

from nbflow import FlowSpec, JSONType, Parameter, step


class JSONParameterFlow(FlowSpec):
    """A mapping given on the command line as JSON."""

    gdp = Parameter("gdp", help="Country-GDP Mapping", type=JSONType, default='{"US": 1939}')
    country = Parameter("country", help="Choose a country", default="US")

    @step
    def start(self):
        print("The GDP of %s is $%dB" % (self.country, self.gdp[self.country]))
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    JSONParameterFlow()
