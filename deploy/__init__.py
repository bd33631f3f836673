"""Deployment files shipped in the wheel: `rowcast stack` renders nginx.conf.template from here."""
