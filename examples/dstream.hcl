# dstream tasks. Values from the environment: {{ env "NAME" }}, with a default: {{ env "NAME" | default "x" }}.

# The demo: synthetic CDC (inserts, updates, deletes over three tables) into one NDJSON file per
# table. Runs anywhere: no SQL Server, no Azure.
task "demo" {
  type = "providers"
  input {
    provider = "generator"
    config {
      count = 1000
      seed  = 42
    }
  }
  output {
    provider = "files"
    config {
      dir = "{{ env "DSTREAM_DEMO_OUT" | default "out/demo" }}"
    }
  }
}

# The same synthetic input delivered to Azure Service Bus, one queue per table. With a connection
# string that has Manage rights, `dstream init generator-to-asb` creates the queues (add
# resource_group to provision them with Pulumi instead).
task "generator-to-asb" {
  type = "providers"
  input {
    provider = "generator"
    config {
      count = 1000
    }
  }
  output {
    provider = "asb-sink"
    config {
      connection_string = "{{ env "ASB_CONNECTION_STRING" | default "" }}"
      on_missing_queue  = "fail"
    }
  }
}
