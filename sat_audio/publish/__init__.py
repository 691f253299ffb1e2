"""Publishers: where events go (MQTT, or JSON lines on stdout when no broker is configured)."""
