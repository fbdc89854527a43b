from rok_registry.main import main

main()
