"""An application without a tracking plan: only the rules that need none run."""
