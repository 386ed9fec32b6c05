# Several workers share one task: start this same task on N machines (or N times). Each table is
# read by the one worker holding its lease (sp_getapplock, owned by the worker's session); when a
# worker dies its session ends, the lease is free, and another worker takes the table over from the
# position stored in dstream.checkpoints. No disk is needed: positions live in the source database.
#   dstream init shop-workers --config examples/mssql-workers.hcl   # also creates dstream.checkpoints
#   dstream run shop-workers --config examples/mssql-workers.hcl    # on every worker
task "shop-workers" {
  type = "providers"
  input {
    provider = "mssql-cdc"
    config {
      connection_string       = "{{ env "MSSQL_CONNECTION_STRING" }}"
      tables                  = ["Persons", "sales.Orders", "Customers"]
      lease                   = true
      max_tables_per_worker   = 2       # 3 tables over 2 workers; a third worker stands by
      checkpoint_table        = "dstream.checkpoints"
      create_checkpoint_table = true
    }
  }
  output {
    provider = "asb-sink"
    config {
      connection_string = "{{ env "ASB_CONNECTION_STRING" }}"
      task              = "shop-workers"
    }
  }
  # The executor stores acknowledged positions in the same table the leases read them from.
  state {
    store             = "sqlserver"
    connection_string = "{{ env "MSSQL_CONNECTION_STRING" }}"
    table             = "dstream.checkpoints"
  }
}
