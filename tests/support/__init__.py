"""What the tests share: polling, the PKI, the e2e stacks, the browser, databases, stand-ins."""
