//! A simulated IBKR Client Portal Gateway (work in progress).
