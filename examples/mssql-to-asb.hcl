# The production shape: SQL Server change data capture to Azure Service Bus, one queue per table.
# Secrets come from the environment, never from this file:
#   export MSSQL_CONNECTION_STRING='Server=db.example,1433;Database=shop;User Id=dstream;Password=...'
#   export ASB_CONNECTION_STRING='Endpoint=sb://shop-prod.servicebus.windows.net/;SharedAccessKeyName=...;SharedAccessKey=...'
#   dstream validate --config examples/mssql-to-asb.hcl
#   dstream plan mssql-to-asb --config examples/mssql-to-asb.hcl     # what init would change
#   dstream init mssql-to-asb --config examples/mssql-to-asb.hcl     # CDC checked, queues created
#   dstream run mssql-to-asb --config examples/mssql-to-asb.hcl      # Ctrl-C stops after a clean drain
#   dstream status mssql-to-asb --config examples/mssql-to-asb.hcl   # positions, lag, queue depths
# The built-in provider runs in-process; provider_path = "node_modules/.bin/mssql-cdc" runs the
# same provider as its own process. docs/sql-server.md has every setting.
task "mssql-to-asb" {
  type = "providers"
  input {
    provider = "mssql-cdc"
    config {
      connection_string = "{{ env "MSSQL_CONNECTION_STRING" }}"
      tables            = ["Persons", "Orders", "Customers"]
      start             = "latest"
      on_gap            = "fail"
    }
  }
  output {
    provider = "asb-sink"
    config {
      connection_string = "{{ env "ASB_CONNECTION_STRING" }}"
      task              = "mssql-to-asb"
      on_missing_queue  = "fail"
      queue_max_delivery_count = 10
      # Provision with Pulumi instead of the administration client:
      # resource_group = "{{ env "AZURE_RESOURCE_GROUP" | default "rg-shop" }}"
    }
  }
}
