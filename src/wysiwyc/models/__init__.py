"""Networks: the explanandum zoo, the Explainer and the mask predictor."""
