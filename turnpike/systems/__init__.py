"""Control systems: the layer maps a turnpike OCP is posed on."""
