"""The predictor (a KServe model), its traffic record, and rolling a new champion out."""
