"""Local stand-ins for the network services the project talks to, speaking their real protocols."""
