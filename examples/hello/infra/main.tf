# Local-only infrastructure for the example: needs no provider download.
resource "terraform_data" "database" {
  input = "example database"
}
