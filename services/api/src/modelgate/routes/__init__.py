"""HTTP routes, thin translations over PredictionService."""
